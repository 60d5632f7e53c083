"""The cluster chaos suite's view of a deployed Tide: the cluster in KUBECONFIG, the API and
Kafka as the host reaches them (kind's NodePorts), Kafka as the tide-operator user, and
PostgreSQL through a port-forward, so the suite can count every event's effects."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from infra.components.kafka_users import OPERATOR, kafka_credentials_secret
from infra.components.postgres import APPS_SECRET, CLUSTER_NAME, PORT
from kubernetes import client, config
from psycopg.conninfo import make_conninfo

from ott.catalog import CATALOG
from tide.auth import API_KEY_HEADER
from tide.topology import ConsumerGroup
from tide.waiting import wait_until
from tide_dev.chaos.experiments import catalogue
from tide_dev.chaos.probes import Ledger
from tide_dev.chaos.processes import free_port

REPO = Path(__file__).resolve().parents[2]
# How long the groups may take to drain, and notification jobs to be delivered, on a CI
# runner (KEDA may first have to scale a group up from zero).
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Cluster:
    core: client.CoreV1Api
    apps: client.AppsV1Api
    apps_namespace: str
    data_namespace: str
    api_url: str
    kafka: dict[str, Any]
    stack: str
    # What every request to the API carries: the stack's credentials (tide.auth).
    api_headers: dict[str, str]

    def group(self, service: str) -> ConsumerGroup:
        (group,) = CATALOG.groups_of(service)
        return group

    def secret(self, name: str, key: str) -> str:
        """One key of a Secret in the apps namespace (where each service's credentials are)."""
        secret = self.core.read_namespaced_secret(name, self.apps_namespace)
        return base64.b64decode((secret.data or {})[key]).decode()

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def ready_pods(self, namespace: str, selector: str) -> int:
        return len([pod for pod in self.pods(namespace, selector) if _ready(pod)])

    def delete_pod(
        self, namespace: str, pod: client.V1Pod, *, grace_period_seconds: int | None = None
    ) -> None:
        if pod.metadata is None or pod.metadata.name is None:
            raise ValueError("a listed pod always has a name")
        self.core.delete_namespaced_pod(
            pod.metadata.name, namespace, grace_period_seconds=grace_period_seconds
        )


def _ready(pod: client.V1Pod) -> bool:
    if pod.metadata is None or pod.metadata.deletion_timestamp is not None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


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
        api_headers=_api_headers(),
    )


def _api_headers() -> dict[str, str]:
    """A token (TIDE_E2E_API_TOKEN, from a jwt stack's issuer) or key (TIDE_E2E_API_KEY),
    else the kind stack's first derived key from its outputs."""
    if token := os.environ.get("TIDE_E2E_API_TOKEN"):
        return {"Authorization": f"Bearer {token}"}
    key = os.environ.get("TIDE_E2E_API_KEY")
    if not key:
        from infra import outputs  # noqa: PLC0415 - the Pulumi CLI only when asked
        from infra.kind import stack_outputs  # noqa: PLC0415

        keys = stack_outputs().get(outputs.API_KEYS, {})
        if not keys:
            raise RuntimeError(
                "the API needs credentials: set TIDE_E2E_API_TOKEN or TIDE_E2E_API_KEY"
            )
        key = next(iter(keys.values()))
    return {API_KEY_HEADER: key}


@dataclass(frozen=True)
class PortForward:
    """A `kubectl port-forward` this suite started, and the file its output goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def exit_reason(self) -> str | None:
        if self.process.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-1500:]
        return f"kubectl port-forward exited {self.process.returncode}:\n{tail}"


def _kubectl() -> str:
    """The Makefile's pinned kubectl (`make cluster-tools`), else the one on PATH."""
    pinned = REPO / "bin" / "kubectl"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("the cluster chaos suite needs kubectl: run `make cluster-tools`")
    return found


def _connects(dsn: str, errors: list[str]) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        errors.append(str(exc).strip())
        return False
    return True


@pytest.fixture(scope="session")
def postgres(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DSN the services use, pointed at a port-forward to the primary (`-rw` Service)."""
    port = free_port()
    log = tmp_path_factory.mktemp("port-forward") / "kubectl.log"
    target = f"svc/{CLUSTER_NAME}-rw"
    dsn = make_conninfo(cluster.secret(APPS_SECRET, "dsn"), host="127.0.0.1", port=str(port))
    with log.open("wb") as output:
        process = subprocess.Popen(
            [_kubectl(), "port-forward", target, f"{port}:{PORT}", "-n", cluster.data_namespace],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    forward = PortForward(process, port, log)
    errors: list[str] = []
    try:
        try:
            wait_until(
                lambda: _connects(dsn, errors),
                timeout=60,
                what=f"PostgreSQL reachable through port-forward {target} on 127.0.0.1:{port}",
                interval=0.5,
                alive=forward.exit_reason,
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last error: {errors[-1:]}") from None
        yield dsn
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def ledger(cluster: Cluster, postgres: str) -> Ledger:
    """Where the no-loss check looks: the catalog's topics and groups, the cluster's database."""
    return Ledger(CATALOG, cluster.kafka, postgres, drain_timeout_s=DRAIN_TIMEOUT_S)


@pytest.fixture(scope="session")
def videos(ledger: Ledger) -> list[str]:
    """Videos recommendation knows (published to Kafka: the API accepts player events only),
    so every watch of one makes a recommendation and hence a notification job to count."""
    return catalogue(ledger, timeout=300)
