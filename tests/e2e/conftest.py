"""The cluster chaos suite's view of a deployed Tide: the cluster in KUBECONFIG, the API and
Kafka as the host reaches them (kind's NodePorts), Kafka as the tide-operator user."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import pytest
from infra.components.kafka_users import OPERATOR, kafka_credentials_secret
from kubernetes import client, config

from tide.catalog import CATALOG
from tide.topology import ConsumerGroup


@dataclass(frozen=True)
class Cluster:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    apps_namespace: str
    data_namespace: str
    api_url: str
    kafka: dict[str, Any]
    stack: str

    def group(self, service: str) -> ConsumerGroup:
        (group,) = CATALOG.groups_of(service)
        return group

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def ready_pods(self, namespace: str, selector: str) -> int:
        return sum(
            1
            for pod in self.pods(namespace, selector)
            if pod.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        )


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise RuntimeError(
            f"the cluster chaos suite needs a cluster: {exc}. Run `make up` first, "
            "or point KUBECONFIG at a cluster where Tide is deployed"
        ) from None
    prefix = os.environ.get("TIDE_E2E_NAMESPACE_PREFIX", "tide")
    core = client.CoreV1Api()
    secret = core.read_namespaced_secret(kafka_credentials_secret(OPERATOR), f"{prefix}-apps")
    password = base64.b64decode((secret.data or {})["password"]).decode()
    return Cluster(
        core=core,
        apps=client.AppsV1Api(),
        apps_namespace=f"{prefix}-apps",
        data_namespace=f"{prefix}-data",
        api_url=os.environ.get("TIDE_E2E_API_URL", "http://localhost:8080"),
        kafka={
            "bootstrap.servers": os.environ.get("TIDE_E2E_KAFKA_BOOTSTRAP", "localhost:30092"),
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": OPERATOR,
            "sasl.password": password,
        },
        stack=os.environ.get("TIDE_E2E_STACK", "kind"),
    )
