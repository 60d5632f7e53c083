"""A Tide service on Kubernetes: `charts/tide-service` with values rendered from the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.api_auth import API_KEYS_SECRET, auth_env
from infra.components.autoscaling import scaler_values
from infra.components.base import PlatformComponent
from infra.components.catalog import CatalogMount
from infra.components.kafka import CA_CERT_KEY, CA_SECRET
from infra.components.kafka_users import kafka_credentials_secret
from infra.components.namespaces import DATA_PORTS
from infra.components.postgres import postgres_credentials_secret
from infra.components.rabbitmq import rabbitmq_credentials_secret
from infra.config import StackConfig
from tide.needs import Dependency, process_needs
from tide.topology import METRICS_PORT, Catalog, Role

CHART = Path(__file__).resolve().parents[2] / "charts" / "tide-service"
# Where a service finds the Kafka cluster CA on a TLS stack (TIDE_KAFKA_CA_LOCATION).
KAFKA_CA_DIR = "/etc/tide/kafka-ca"


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where the data namespace's brokers answer, as the services see them."""

    data_namespace: str
    monitoring_namespace: str
    kafka_bootstrap: str
    # None: the stack runs no registry (StackConfig.schema_registry).
    schema_registry_url: str | None


def service_values(
    catalog: Catalog,
    name: str,
    config: StackConfig,
    endpoints: Endpoints,
    catalog_mount: CatalogMount | None = None,
    *,
    api_keys_checksum: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """The chart values of one service; everything it learns comes from here (12-factor).

    `api_keys_checksum`, the digest of the API keys' Secret, rolls an API's pods when the
    keys change (they are read at start).

    Its settings, secrets and egress follow from what its process needs
    (`tide.needs`), the same needs `tide run` checks before it starts. With
    `catalog_mount` it reads the stack's catalog from that ConfigMap.
    """
    service = catalog.service(name)
    needs = process_needs(catalog, name)
    env: dict[str, str] = {"TIDE_SERVICE": service.name, "TIDE_LOG_FORMAT": "json"}
    secret_env: dict[str, dict[str, str]] = {}
    # A stack without a registry gives no URL: the process then writes plain JSON.
    dependencies = [
        d
        for d in needs.dependencies
        if d is not Dependency.SCHEMA_REGISTRY or endpoints.schema_registry_url is not None
    ]
    for dependency in dependencies:
        given, secrets = _dependency_env(dependency, name, config, endpoints)
        env |= given
        secret_env |= secrets
    egress_ports = sorted({DATA_PORTS[dependency] for dependency in dependencies})
    secret_files: list[dict[str, str]] = []
    if Dependency.KAFKA in needs.dependencies and config.kafka.tls:
        # The listener's certificate is signed by the CA cert-manager made
        # (infra.components.kafka_tls), which it hands to the apps namespace.
        secret_files.append(
            {
                "secret": CA_SECRET,
                "key": CA_CERT_KEY,
                "mountPath": KAFKA_CA_DIR,
            }
        )
        env["TIDE_KAFKA_CA_LOCATION"] = f"{KAFKA_CA_DIR}/{CA_CERT_KEY}"

    is_api = service.role is Role.API
    egress_anywhere: list[int] = []
    secret_checksums: dict[str, pulumi.Input[str]] = {}
    if is_api:
        # Who may call it (tide.auth): the stack's mode; under jwt it fetches the issuer's
        # keys, wherever they are.
        assert config.auth is not None, "StackConfig refuses a stack without tide:auth"
        given, secrets = auth_env(config.auth)
        env |= given
        secret_env |= secrets
        if config.auth.jwks_port is not None:
            egress_anywhere.append(config.auth.jwks_port)
        if api_keys_checksum is not None:
            secret_checksums[API_KEYS_SECRET] = api_keys_checksum
    node_port = config.exposure.api_node_port
    values: dict[str, Any] = {
        "name": service.name,
        "role": str(service.role),
        "image": {
            "repository": config.image.repository,
            "tag": config.image.resolved_tag,
            "pullPolicy": config.image.pull_policy,
        },
        "args": list(service.command),
        "replicas": service.replicas,
        "http": {"port": service.http_port},
        "metrics": {"port": METRICS_PORT},
        "env": env,
        "secretEnv": secret_env,
        "secretFiles": secret_files,
        "secretChecksums": secret_checksums,
        **({"catalog": catalog_mount.chart_values()} if catalog_mount is not None else {}),
        # Only what the catalog calls public leaves the cluster; every other API is
        # reached from inside it (kubectl port-forward for a person).
        "service": {
            "type": config.exposure.service_type if service.public else "ClusterIP",
            "nodePort": node_port
            if service.public and config.exposure.service_type == "NodePort"
            else None,
        },
        "podDisruptionBudget": {
            "enabled": config.pod_disruption_budgets,
            "maxUnavailable": 1,
        },
        "networkPolicy": {
            "enabled": True,
            "ingressFromAnywhere": is_api,
            "metricsNamespace": endpoints.monitoring_namespace,
            "egress": (
                [{"namespace": endpoints.data_namespace, "ports": egress_ports}]
                if egress_ports
                else []
            ),
            "egressToAnywhere": egress_anywhere,
        },
        "serviceMonitor": {"enabled": True, "interval": "15s"},
        "autoscaling": scaler_values(
            catalog, name, endpoints.kafka_bootstrap, tls=config.kafka.tls
        ),
    }
    return values


def _dependency_env(
    dependency: Dependency, service: str, config: StackConfig, endpoints: Endpoints
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The variables (plain, and from Secrets in the apps namespace) that reach a dependency."""
    match dependency:
        case Dependency.KAFKA:
            secret = kafka_credentials_secret(service)
            protocol = "SASL_SSL" if config.kafka.tls else "SASL_PLAINTEXT"
            return (
                {
                    dependency.variable: endpoints.kafka_bootstrap,
                    "TIDE_KAFKA_SECURITY_PROTOCOL": protocol,
                },
                {
                    "TIDE_KAFKA_USERNAME": {"secret": secret, "key": "username"},
                    "TIDE_KAFKA_PASSWORD": {"secret": secret, "key": "password"},
                    "TIDE_KAFKA_SASL_MECHANISM": {"secret": secret, "key": "sasl-mechanism"},
                },
            )
        case Dependency.SCHEMA_REGISTRY:
            assert endpoints.schema_registry_url is not None, "no registry to give"
            return {dependency.variable: endpoints.schema_registry_url}, {}
        case Dependency.RABBITMQ:
            secret = rabbitmq_credentials_secret(service)
            return {}, {dependency.variable: {"secret": secret, "key": "url"}}
        case Dependency.POSTGRES:
            secret = postgres_credentials_secret(service)
            return {}, {dependency.variable: {"secret": secret, "key": "dsn"}}


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
