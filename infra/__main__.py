"""Tide's Pulumi program: read the stack config, build the platform from the stack's catalog
(`tide:catalog`, else the reference one), export."""

from __future__ import annotations

import pulumi

from infra import outputs
from infra.config import ConfigError, load
from infra.credentials import Credentials
from infra.outputs import endpoint_urls
from infra.platform import build

try:
    stack_config = load()
except ConfigError as error:
    # One clear message, not a traceback: the key, and what it may be.
    raise pulumi.RunError(str(error)) from None

platform = build(stack_config, stack_config.platform_catalog(), Credentials.from_stack_config())
names = vars(platform.namespaces.names)
for key, value in endpoint_urls(stack_config, names).items():
    pulumi.export(key, value)
if platform.monitoring.grafana_password is not None:
    pulumi.export(
        outputs.GRAFANA_ADMIN_PASSWORD, pulumi.Output.secret(platform.monitoring.grafana_password)
    )
pulumi.export(outputs.KAFKA_BOOTSTRAP, platform.kafka.bootstrap)
if platform.registry is not None:
    pulumi.export(outputs.SCHEMA_REGISTRY_URL, platform.registry.url)
pulumi.export(outputs.NAMESPACES, names)
