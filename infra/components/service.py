"""A Tide service on Kubernetes: `charts/tide-service` with values rendered from the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.autoscaling import scaler_values
from infra.components.base import PlatformComponent
from infra.components.kafka_users import kafka_credentials_secret, uses_kafka
from infra.components.namespaces import DATA_PORTS
from infra.components.postgres import APPS_SECRET as POSTGRES_SECRET
from infra.components.rabbitmq import rabbitmq_credentials_secret
from infra.config import StackConfig
from tide.topology import Catalog, Role

CHART = Path(__file__).resolve().parents[2] / "charts" / "tide-service"
HTTP_PORT = 8080


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where the data namespace's brokers answer, as the services see them."""

    data_namespace: str
    monitoring_namespace: str
    kafka_bootstrap: str
    schema_registry_url: str


def service_values(
    catalog: Catalog, name: str, config: StackConfig, endpoints: Endpoints
) -> dict[str, Any]:
    """The chart values of one service; everything it learns comes from here (12-factor)."""
    service = catalog.service(name)
    env: dict[str, str] = {"TIDE_SERVICE": service.name, "TIDE_LOG_FORMAT": "json"}
    secret_env: dict[str, dict[str, str]] = {}
    egress_ports: list[int] = []
    if uses_kafka(catalog, name):
        env["TIDE_KAFKA_BOOTSTRAP"] = endpoints.kafka_bootstrap
        env["TIDE_KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL" if config.kafka.tls else "SASL_PLAINTEXT"
        env["TIDE_SCHEMA_REGISTRY_URL"] = endpoints.schema_registry_url
        secret = kafka_credentials_secret(name)
        secret_env["TIDE_KAFKA_USERNAME"] = {"secret": secret, "key": "username"}
        secret_env["TIDE_KAFKA_PASSWORD"] = {"secret": secret, "key": "password"}
        secret_env["TIDE_KAFKA_SASL_MECHANISM"] = {"secret": secret, "key": "sasl-mechanism"}
        egress_ports += [DATA_PORTS["kafka"], DATA_PORTS["registry"]]
    if catalog.uses_rabbitmq(name):
        secret_env["TIDE_RABBITMQ_URL"] = {
            "secret": rabbitmq_credentials_secret(name),
            "key": "url",
        }
        egress_ports.append(DATA_PORTS["rabbitmq"])
    if service.uses_postgres:
        secret_env["TIDE_POSTGRES_DSN"] = {"secret": POSTGRES_SECRET, "key": "dsn"}
        egress_ports.append(DATA_PORTS["postgres"])

    is_api = service.role is Role.API
    node_port = config.exposure.api_node_port if name == "video-service" else None
    values: dict[str, Any] = {
        "name": service.name,
        "role": str(service.role),
        "image": {
            "repository": config.image.repository,
            "tag": config.image.tag,
            "pullPolicy": config.image.pull_policy,
        },
        "args": list(service.command),
        "replicas": service.replicas,
        "http": {"port": HTTP_PORT},
        "env": env,
        "secretEnv": secret_env,
        "service": {
            "type": config.exposure.service_type if is_api else "ClusterIP",
            "nodePort": node_port
            if is_api and config.exposure.service_type == "NodePort"
            else None,
        },
        "podDisruptionBudget": {
            "enabled": config.pod_disruption_budgets,
            "minAvailable": 1,
        },
        "networkPolicy": {
            "enabled": True,
            "ingressFromAnywhere": is_api,
            "metricsNamespace": endpoints.monitoring_namespace,
            "egress": (
                [{"namespace": endpoints.data_namespace, "ports": sorted(set(egress_ports))}]
                if egress_ports
                else []
            ),
        },
        "serviceMonitor": {"enabled": True, "interval": "15s"},
        "autoscaling": scaler_values(catalog, name, endpoints.kafka_bootstrap),
    }
    return values


@dataclass(frozen=True, kw_only=True)
class TideServiceArgs:
    namespace: str
    values: dict[str, Any]


class TideService(PlatformComponent):
    """One release of `charts/tide-service`."""

    chart: k8s.helm.v4.Chart

    def __init__(
        self, name: str, args: TideServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:service:TideService", name, opts)
        self.chart = k8s.helm.v4.Chart(
            name,
            chart=str(CHART),
            namespace=args.namespace,
            values=args.values,
            opts=self.child(),
        )
        self.register_outputs({})
