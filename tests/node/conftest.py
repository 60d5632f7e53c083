"""The node tier's shared parts: Tide's image and a team's (the shop's) for the node, a
cluster whose one node is real, with cluster DNS, the host checked as found afterwards, a
stack put up there with its brokers served, and a script run in a pod there."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from infra import kind
from infra.config import Versions
from infra.local_stack import ROOT, LocalStack
from kubernetes import client
from kubernetes import config as kube_config

from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import local_stack, stack_kubeconfig
from tests.harness import cluster_dns
from tests.harness.addresses import NODE_LINK_HOST
from tests.harness.cluster import Cluster
from tests.harness.controlplane import binary
from tests.harness.crds import crd_documents
from tests.harness.diagnostics import describe_pods
from tests.harness.docker import build_image, docker, service_image
from tests.harness.images import pause_image
from tests.harness.node import KUBELET_SYSCTLS, PAUSE_IMAGE, Node, sysctl
from tests.harness.played_operators import PlayedOperators
from tests.harness.served_brokers import ServedBrokers
from tests.reports import NODE as NODE_REPORT
from tests.reports import report
from tide.topology import Catalog
from tide.waiting import wait_until

NODE = "tide-node"
TIDE_IMAGE = "tide:node"
# A team's own image, FROM Tide's with its package installed: the name and tag the shop's
# program (examples/orders/deploy) deploys.
SHOP = ROOT / "examples" / "orders"
SHOP_IMAGE = "shop:0.1.0"
NODE_MOUNTS = ("/var/lib/kubelet", "/run/netns/", "/var/lib/cni", "/run/containerd/runc/k8s.io")


def _host_state() -> dict[str, object]:
    """What a node may change on the host."""

    def ip(*args: str) -> str:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

    paths = ("/var/lib/kubelet", "/var/log/pods", "/var/lib/cni", "/run/tide-node")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "sysctls": {name: sysctl(name) for name in KUBELET_SYSCTLS},
        # The node's own link and routes (Docker's containers come and go beside the test).
        "links": sorted(
            p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("tn")
        ),
        "routes": [r for r in ip("route").splitlines() if "203.0.113." in r or " tn" in r],
        "netns": ip("netns", "list"),
        # Mount points the node's runtime could leave, by name: other users of the machine
        # (Docker's containers, for one) mount and unmount elsewhere while the test runs.
        "mounts": [m for m in mounts if "tide-node" in m or m.startswith(NODE_MOUNTS)],
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/tide-node-*")),
        "paths": [p for p in paths if Path(p).exists()],
    }


@pytest.fixture(scope="session")
def service_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tide's image, and the shop's built from it by its Dockerfile, in one `docker save`
    archive the node imports."""
    archive = tmp_path_factory.mktemp("images") / "services.tar"
    with service_image(TIDE_IMAGE) as image:
        shop = build_image(SHOP_IMAGE, SHOP, TIDE_IMAGE=image)
        docker("save", "--output", str(archive), image, shop, timeout=300)
    return archive


# The node's package: it stops, with the pods of its last stack, before the next tier.
@pytest.fixture(scope="package")
def shared_node(service_images: Path) -> Iterator[NodeCluster]:
    """The one real node of this package, its modules' in turn: pods reaching brokers by
    Service (test_node.py), the shop's program put up and destroyed (test_shop.py), then
    Tide's kind stack (test_stack.py). Each module takes away what it put there."""
    with real_node(service_images) as joined:
        yield joined


@dataclass(frozen=True)
class NodeStack:
    """A stack `pulumi up` put on the real node, and the brokers served behind it."""

    stack: LocalStack
    core: client.CoreV1Api
    brokers: ServedBrokers
    outputs: dict[str, Any]


@contextmanager
def stack_on_the_node(
    joined: NodeCluster, prefix: str, *, home: str, source: Path = ROOT, **overrides: object
) -> Iterator[NodeStack]:
    """The kind stack of the project at `source` (Tide's, or a team's) put up as `make up`
    does, operators external, under namespaces `<prefix>-*`, its brokers served from the
    host as its operators would serve them (tests/harness/served_brokers.py); the brokers
    stopped after. One change to the stack file: `tide:schemaRegistry: none`, since
    Apicurio's image cannot be had here (the services then write plain JSON validated
    against the same schemas, as the README's stack settings describe)."""
    core = client.CoreV1Api(joined.api)
    brokers = ServedBrokers(joined.workdir / f"{home}-brokers", core, address=NODE_LINK_HOST,
                            data=f"{prefix}-data")  # fmt: skip
    played = PlayedOperators(joined.cluster.kubeconfig, brokers.played())
    kubeconfig = stack_kubeconfig(joined.cluster, joined.workdir / f"kubeconfig-{home}")
    stack = local_stack("kind", joined.workdir, kubeconfig, home=home, source=source, **{
        "tide:namespacePrefix": prefix, "tide:schemaRegistry": "none", **overrides})  # fmt: skip
    try:
        ApiServer(joined.cluster.kubeconfig).install(crd_documents(Versions()))
        brokers.start()
        played.start()
        try:
            shown = kind.pulumi_up(stack)
        except Exception as exc:
            apps = describe_pods(core, f"{prefix}-apps")
            raise AssertionError(f"{exc}\nprovisioning retried: {played.retrying}\n{apps}") from exc
        yield NodeStack(stack, core, brokers, shown)
    finally:
        played.stop()
        brokers.stop()


@dataclass(frozen=True)
class NodeCluster:
    """A control plane and the real node joined to it, with a directory for their peers."""

    workdir: Path
    cluster: Cluster
    api: client.ApiClient
    node: Node


@contextmanager
def real_node(archive: Path) -> Iterator[NodeCluster]:
    """A control plane on the host end of the node's link, the real node joined to it with
    the pause and CoreDNS's images and those in `archive`, and CoreDNS running there; the
    host state is checked once all is gone, so a test that leaves it changed fails."""
    Node.restore_all()  # what a killed run left: a second run starts clean
    before = _host_state()
    with tempfile.TemporaryDirectory(prefix="tide-node-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)  # the brokers run as their own users
        (workdir / "node").mkdir()
        node = Node(workdir / "node", name=NODE, kubelet=binary("kubelet"),
                    kube_proxy=binary("kube-proxy"))  # fmt: skip
        # The API server listens on the host end of the node's link: the link comes first.
        node.prepare()
        try:
            with Cluster(workdir / "cluster", nodes=0, address=NODE_LINK_HOST) as cluster:
                images = [pause_image(PAUSE_IMAGE, workdir),
                          cluster_dns.coredns_image(workdir), archive]  # fmt: skip
                node.start(images, admin=cluster.kubeconfig, certs=workdir / "cluster" / "certs")
                api = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
                cluster_dns.deploy(api, NODE)
                yield NodeCluster(workdir, cluster, api, node)
        finally:
            node.stop()
    assert _host_state() == before, "the node left the host changed"


def services_on_the_node(
    pods: list[dict[str, Any]], catalog: Catalog, image: str
) -> list[dict[str, Any]]:
    """The services' pods among a stack's `pods`, having checked that every service of
    `catalog` runs, Ready, and that every pod of the stack runs on the real node from
    `image`, so that nothing of the stack runs anywhere else."""
    services = [p for p in pods if "job-name" not in (p["metadata"]["labels"] or {})]
    running = {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in services}
    assert running == {s.name for s in catalog.services}
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["node_name"] == NODE, f"{name} on {pod['spec']['node_name']}"
        (container,) = pod["status"]["container_statuses"]
        assert container["image"].endswith(image), container["image"]
        if pod in services:
            assert container["ready"], name
    return services


def migrated_tables(pods: list[dict[str, Any]], dsn: str) -> set[str]:
    """The tables of `dsn`'s public schema, having checked that the stack's migrate Job
    (among its `pods`) ran `tide db migrate` to completion on the real node."""
    jobs = [p for p in pods if "job-name" in (p["metadata"]["labels"] or {})]
    migrate = [
        p for p in jobs if p["spec"]["containers"][0]["args"][:3] == ["tide", "db", "migrate"]
    ]
    assert migrate, [p["spec"]["containers"][0]["args"] for p in jobs]
    assert all(p["spec"]["node_name"] == NODE for p in migrate)
    assert all(p["status"]["phase"] == "Succeeded" for p in migrate)
    with psycopg.connect(dsn) as conn:
        listed = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        return {row[0] for row in conn.execute(listed)}


# A POST from inside the cluster: the answer's status (an error status too) and when, by
# the node's clock (epoch seconds), the request was sent.
_POST = """
import json, sys, time, urllib.error, urllib.request
url, body, headers = sys.argv[1], sys.argv[2].encode(), json.loads(sys.argv[3])
request = urllib.request.Request(url, data=body, method="POST", headers=headers)
posted = time.time()
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        status = answer.status
except urllib.error.HTTPError as refused:
    status = refused.code
print(status, posted)
"""


def post_from_pod(
    core: client.CoreV1Api, pod: str, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, float]:
    """`body` posted as JSON to `url` from a pod on the node: the status, and when it was
    sent (epoch seconds, the node's clock)."""
    headers = {"Content-Type": "application/json", **headers}
    args = (url, json.dumps(body), json.dumps(headers))
    (log,) = pythons_in_pods(core, [PythonPod(pod, _POST, args)])
    status, posted = log.split()
    return int(status), float(posted)


def python_in_pod(core: client.CoreV1Api, name: str, script: str) -> str:
    """`script` run by the Python of Tide's image, in a pod on the real node; its output."""
    (log,) = pythons_in_pods(core, [PythonPod(name, script)])
    return log


@dataclass(frozen=True)
class PythonPod:
    """A script for the Python of Tide's image, with its arguments; by default in a bare pod
    in `default`, or as a pod of `template` (a Deployment's pod template, as the API
    serializes it: its labels, ServiceAccount, security context and environment) with the
    first container's command replaced and its probes dropped."""

    name: str
    script: str
    args: tuple[str, ...] = ()
    namespace: str = "default"
    template: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        command = {"command": ["python", "-c", self.script], "args": list(self.args)}
        if self.template is None:
            labels: dict[str, str] = {}
            containers = [{"name": "main", "image": TIDE_IMAGE, "imagePullPolicy": "Never",
                           **command}]  # fmt: skip
            spec: dict[str, Any] = {}
        else:
            labels = {k: v for k, v in self.template["metadata"]["labels"].items()
                      if k != "pod-template-hash"}  # fmt: skip
            spec = dict(self.template["spec"])
            first = {k: v for k, v in spec["containers"][0].items() if not k.endswith("Probe")}
            containers = [{**first, **command}]
        return {"metadata": {"name": self.name, "labels": labels},
                "spec": {**spec, "nodeName": NODE, "restartPolicy": "Never",
                         "containers": containers}}  # fmt: skip


def pythons_in_pods(core: client.CoreV1Api, pods: list[PythonPod]) -> list[str]:
    """Each of `pods` run at once on the real node, to completion; their outputs, in order."""
    for pod in pods:
        core.create_namespaced_pod(pod.namespace, pod.manifest())

    def finished() -> bool:
        phases = [core.read_namespaced_pod(p.name, p.namespace).status.phase for p in pods]
        return all(phase in ("Succeeded", "Failed") for phase in phases)

    namespaces = sorted({p.namespace for p in pods})
    try:
        names = ", ".join(p.name for p in pods)
        wait_until(finished, timeout=180, interval=1, what=f"pods {names} finished on the node")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{_described(core, namespaces)}") from exc
    logs = []
    for spec in pods:
        pod = core.read_namespaced_pod(spec.name, spec.namespace)
        assert pod.status.phase == "Succeeded", (
            f"pod {spec.name} failed:\n{_described(core, namespaces)}"
        )
        (container,) = pod.status.container_statuses
        started = container.state.terminated.started_at - pod.metadata.creation_timestamp
        report(NODE_REPORT, f"pod {spec.name} ({container.image}): container started "
                     f"{started.total_seconds():.0f} s after the pod was created")  # fmt: skip
        logs.append(str(core.read_namespaced_pod_log(spec.name, spec.namespace)))
    return logs


def _described(core: client.CoreV1Api, namespaces: list[str]) -> str:
    return "\n".join(describe_pods(core, namespace) for namespace in namespaces)
