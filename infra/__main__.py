"""Tide's own Pulumi program, one user of `TidePlatform` as a team's program would be:
read the stack config, deploy the stack's catalog (`tide:catalog`, else the reference one),
export the outputs `make up` and the tests read."""

from __future__ import annotations

import pulumi

from infra import outputs
from infra.config import ConfigError, load
from infra.platform import TidePlatform, TidePlatformArgs
from ott.catalog import CATALOG

try:
    stack_config = load()
except ConfigError as error:
    # One clear message, not a traceback: the key, and what it may be.
    raise pulumi.RunError(str(error)) from None

# Its parts keep the URNs they had as the stack's own resources (aliases in `build`), so a
# stack deployed before the component existed updates in place.
platform = TidePlatform(
    "platform",
    TidePlatformArgs(catalog=stack_config.platform_catalog(CATALOG), settings=stack_config),
)
for key, url in platform.endpoints.items():
    pulumi.export(key, url)
if platform.grafana_admin_password is not None:
    pulumi.export(outputs.GRAFANA_ADMIN_PASSWORD, platform.grafana_admin_password)
if platform.api_keys is not None:
    pulumi.export(outputs.API_KEYS, platform.api_keys)
pulumi.export(outputs.KAFKA_BOOTSTRAP, platform.kafka_bootstrap)
if platform.schema_registry_url is not None:
    pulumi.export(outputs.SCHEMA_REGISTRY_URL, platform.schema_registry_url)
pulumi.export(outputs.NAMESPACES, platform.namespaces)
