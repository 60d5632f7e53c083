"""A real node joins the harness cluster: a pod runs on it, and the host is left as found."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes import config as kube_config

from tests.harness.addresses import NODE_LINK_HOST, NODE_PODS
from tests.harness.cluster import Cluster
from tests.harness.controlplane import binary
from tests.harness.images import pause_image
from tests.harness.node import KUBELET_SYSCTLS, PAUSE_IMAGE, Node, kubelet_kubeconfig, sysctl
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(600)
NODE = "tide-node"


def _host_state() -> dict[str, object]:
    """What a node may change on the host."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    paths = ("/var/lib/kubelet", "/var/log/pods", "/var/lib/cni", "/run/tide-node")
    return {
        "sysctls": {name: sysctl(name) for name in KUBELET_SYSCTLS},
        "links": sorted(p.name for p in Path("/sys/class/net").iterdir()),
        "netns": netns.stdout,
        "mounts": Path("/proc/self/mountinfo").read_text().count("\n"),
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/tide-node-*")),
        "paths": [p for p in paths if Path(p).exists()],
    }


def _running(api: client.CoreV1Api, name: str) -> bool:
    status = api.read_namespaced_pod(name, "default").status
    statuses = status.container_statuses or []
    return bool(status.pod_ip) and bool(statuses) and all(s.ready for s in statuses)


def test_a_pod_runs_on_the_real_node_and_the_host_is_left_as_found() -> None:
    Node.restore_all()  # what a killed run left: a second run starts clean
    before = _host_state()
    with tempfile.TemporaryDirectory(prefix="tide-node-") as directory:
        workdir = Path(directory)
        (workdir / "node").mkdir()
        node = Node(
            workdir / "node",
            name=NODE,
            kubeconfig=workdir / "kubelet.kubeconfig",
            ca=workdir / "cluster" / "certs" / "ca.crt",
            kubelet=binary("kubelet"),
        )
        # The API server listens on the host end of the node's link: the link comes first.
        node.prepare()
        try:
            with Cluster(workdir / "cluster", nodes=0, address=NODE_LINK_HOST) as cluster:
                kubelet_kubeconfig(cluster.kubeconfig, workdir / "cluster" / "certs", NODE,
                                   workdir / "kubelet.kubeconfig")  # fmt: skip
                node.start([pause_image(PAUSE_IMAGE, workdir)])
                api = client.CoreV1Api(
                    kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
                )
                container = {"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
                api.create_namespaced_pod("default", {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                    "spec": {"nodeName": NODE, "containers": [container]}})  # fmt: skip
                wait_until(lambda: _running(api, "p"), timeout=120, interval=1,
                           what="the pod Running on the real node")  # fmt: skip
                pod_ip = api.read_namespaced_pod("p", "default").status.pod_ip
                assert pod_ip.startswith(NODE_PODS.rsplit(".", 1)[0] + ".")
        finally:
            node.stop()
    assert _host_state() == before
