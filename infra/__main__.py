"""Tide's Pulumi program: read the stack config, build the platform from the catalog, export."""

from __future__ import annotations

import pulumi

from infra import outputs
from infra.config import ConfigError, StackConfig, load
from infra.platform import build
from tide.catalog import CATALOG


def _urls(config: StackConfig, namespaces: dict[str, str]) -> dict[str, str]:
    if config.flavor == "kind":
        # k8s/kind/cluster.yaml maps the NodePorts to these host ports.
        return {
            outputs.API_URL: "http://localhost:8080",
            outputs.GRAFANA_URL: "http://localhost:3000",
            outputs.PROMETHEUS_URL: "http://localhost:9090",
        }
    monitoring = namespaces["monitoring"]
    return {
        outputs.API_URL: f"kubectl -n {namespaces['apps']} port-forward svc/video-service 8080",
        outputs.GRAFANA_URL: (
            f"kubectl -n {monitoring} port-forward svc/tide-monitoring-grafana 3000:80"
        ),
        outputs.PROMETHEUS_URL: (
            f"kubectl -n {monitoring} port-forward svc/tide-monitoring-prometheus 9090"
        ),
    }


try:
    stack_config = load()
except ConfigError as error:
    # One clear message, not a traceback: the key, and what it may be.
    raise pulumi.RunError(str(error)) from None

platform = build(stack_config, CATALOG)
names = vars(platform.namespaces.names)
for key, value in _urls(stack_config, names).items():
    pulumi.export(key, value)
pulumi.export(
    outputs.GRAFANA_ADMIN_PASSWORD, pulumi.Output.secret(platform.monitoring.grafana_password)
)
pulumi.export(outputs.KAFKA_BOOTSTRAP, platform.kafka.bootstrap)
pulumi.export(outputs.SCHEMA_REGISTRY_URL, platform.registry.url)
pulumi.export(outputs.NAMESPACES, names)
