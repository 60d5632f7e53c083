"""`pulumi up` of the kind stack puts Tide's services on the real node.

The real Pulumi engine deploys the kind stack (operators external, as `make up` runs it
beside its charts) onto a cluster with the real node and a KWOK node. Tide's pods run on
the real node, from Tide's image, and must pass their own readiness probes there: each
reaches Kafka (SCRAM), RabbitMQ and PostgreSQL through the Services, Secrets and names
the program renders, which the played operators serve from the harness's brokers
(tests/harness/served_brokers.py). Pods of upstream images (the schema registry,
Apicurio, whose image cannot be had here) and the Job that registers schemas in it run
on KWOK (tests/harness/placement.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from infra import kind
from infra.config import Versions
from kubernetes import client

from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import local_stack, stack_kubeconfig
from tests.harness import cluster_dns
from tests.harness.addresses import NODE_LINK_HOST
from tests.harness.crds import crd_documents
from tests.harness.diagnostics import describe_pods
from tests.harness.node import PAUSE_IMAGE
from tests.harness.placement import REAL_NODE_TAINT, Placement, where
from tests.harness.played_operators import PlayedOperators
from tests.harness.served_brokers import ServedBrokers
from tests.node.conftest import NODE, TIDE_IMAGE, python_in_pod, real_node
from tests.reports import NODE as NODE_REPORT
from tests.reports import report
from tide.catalog import CATALOG

pytestmark = pytest.mark.timeout(1500)
PREFIX = "node"
APPS, DATA = f"{PREFIX}-apps", f"{PREFIX}-data"


def _registers_schemas(pod: dict[str, Any]) -> bool:
    """The Job that registers every schema with the registry: it waits on Apicurio, which
    runs on KWOK, so it runs there too."""
    containers = pod["spec"]["containers"]
    return any(c.get("args") == ["tide", "registry", "register"] for c in containers)


@dataclass(frozen=True)
class Deployed:
    core: client.CoreV1Api
    brokers: ServedBrokers
    pods: list[dict[str, Any]]


@pytest.fixture(scope="module")
def deployed(tide_archive: Any) -> Iterator[Deployed]:
    with real_node(tide_archive, kwok_nodes=1) as (workdir, cluster, api):
        core = client.CoreV1Api(api)
        images = frozenset({TIDE_IMAGE, PAUSE_IMAGE, cluster_dns.IMAGE})
        placement = Placement(workdir, node=NODE, images=images, stays_on_kwok=_registers_schemas)
        placement.start()
        admin = ApiServer(cluster.kubeconfig)
        brokers = ServedBrokers(workdir / "brokers", core, address=NODE_LINK_HOST, data=DATA)
        played = PlayedOperators(cluster.kubeconfig, brokers.played())
        try:
            assert admin.apply(placement.configuration()) is None
            core.patch_node(NODE, {"spec": {"taints": [REAL_NODE_TAINT]}})
            admin.install(crd_documents(Versions()))
            brokers.start()
            played.start()
            kubeconfig = stack_kubeconfig(cluster, workdir / "kubeconfig-stack")
            stack = local_stack("kind", workdir, kubeconfig, home="stack", **{
                "tide:namespacePrefix": PREFIX,
                "tide:image": {"repository": "tide", "tag": "node", "pullPolicy": "Never"},
            })  # fmt: skip
            try:
                kind.pulumi_up(stack)
            except Exception as exc:
                raise AssertionError(
                    f"{exc}\nprovisioning retried: {played.retrying}\n{describe_pods(core, APPS)}"
                ) from exc
            pods = [p.to_dict() for p in core.list_pod_for_all_namespaces().items]
            yield Deployed(core, brokers, pods)
        finally:
            played.stop()
            brokers.stop()
            placement.stop()


def _nodes(core: client.CoreV1Api) -> dict[str, dict[str, Any]]:
    return {n.metadata.name: n.to_dict() for n in core.list_node().items}


def test_tides_services_run_on_the_real_node_and_pass_their_probes(deployed: Deployed) -> None:
    """Every Deployment of Tide's image rolled out (the engine waited on it) with its pods
    on the real node, Ready: their readiness probes reached the brokers through the
    Services. The schema registry's pods are on KWOK."""
    placed = where(deployed.pods, _nodes(deployed.core))
    apps = [p for p in deployed.pods if p["metadata"]["namespace"] == APPS]
    services = [p for p in apps if "job-name" not in (p["metadata"]["labels"] or {})]
    assert services, "no Tide service pod"
    expected = {s.name for s in CATALOG.services}
    running = {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in services}
    assert running <= expected, running - expected
    for pod in services:
        name = pod["metadata"]["name"]
        assert pod["spec"]["node_name"] == NODE, f"{name} on {pod['spec']['node_name']}"
        (container,) = pod["status"]["container_statuses"]
        assert container["ready"], name
        assert container["image"].endswith(TIDE_IMAGE), container["image"]
        assert pod["spec"]["containers"][0]["readiness_probe"] is not None, name
    registry = [p for p in deployed.pods if p["metadata"]["namespace"] == DATA]
    assert registry
    assert all(f"{DATA}/{p['metadata']['name']}" in placed["kwok"] for p in registry)
    lines = []
    for pod in services:
        (ready,) = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
        took = (ready["last_transition_time"] - pod["metadata"]["creation_timestamp"]).seconds
        lines.append(f"{pod['metadata']['name']}: Ready {took} s after creation")
    report(NODE_REPORT, "pulumi up of the kind stack, on the real node:\n  " + "\n  ".join(lines))
    report(NODE_REPORT, "on KWOK (images that cannot be had here, and what waits on them): "
           + ", ".join(sorted(placed["kwok"])))  # fmt: skip


def test_the_migrate_job_ran_on_the_real_node_against_postgres(deployed: Deployed) -> None:
    """`tide db migrate`, run by the Job the program renders, created Tide's tables in the
    harness's PostgreSQL through the read-write Service."""
    jobs = [p for p in deployed.pods if p["metadata"]["namespace"] == APPS
            and "job-name" in (p["metadata"]["labels"] or {})]  # fmt: skip
    migrate = [
        p for p in jobs if p["spec"]["containers"][0]["args"][:3] == ["tide", "db", "migrate"]
    ]
    assert migrate, [p["spec"]["containers"][0]["args"] for p in jobs]
    assert all(p["spec"]["node_name"] == NODE for p in migrate)
    assert all(p["status"]["phase"] == "Succeeded" for p in migrate)
    with psycopg.connect(deployed.brokers.postgres.dsn) as conn:
        listed = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        tables = {row[0] for row in conn.execute(listed)}
    assert {"events", "outbox", "processed_events"} <= tables, tables


def test_the_subscription_api_answers_through_its_service(deployed: Deployed) -> None:
    """From a pod on the node: a subscription started through the API's Service is stored
    in the harness's PostgreSQL, as the event store's first events of its stream (the
    start, and the first payment it takes)."""
    service = deployed.core.read_namespaced_service("subscription", APPS)
    (port,) = [p.port for p in service.spec.ports]
    url = f"http://subscription.{APPS}.svc:{port}/v1/subscriptions/sub-node-1/start"
    body = json.dumps({"user_id": "u-node", "plan": "standard"})
    script = (
        "import urllib.request\n"
        f"request = urllib.request.Request({url!r}, data={body!r}.encode(), method='POST',\n"
        "                                 headers={'Content-Type': 'application/json'})\n"
        "with urllib.request.urlopen(request, timeout=30) as answer:\n"
        "    print(answer.status)\n"
    )
    log = python_in_pod(deployed.core, "start-subscription", script)
    assert log.split() == ["200"], log
    with psycopg.connect(deployed.brokers.postgres.dsn) as conn:
        stored = conn.execute(
            "SELECT type FROM events WHERE stream_id LIKE %s ORDER BY position", ("%sub-node-1",)
        ).fetchall()
    assert [row[0] for row in stored] == ["subscription.started", "payment.captured"], stored
