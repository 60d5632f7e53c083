"""A control plane that behaves like a cluster: controllers, a scheduler and KWOK nodes.

On top of the deploy tier's etcd and kube-apiserver: kube-controller-manager
(Deployments roll out, Jobs complete, Endpoints follow pods, the garbage
collector and namespace controller clean up) and kube-scheduler, at the same
Kubernetes version, and KWOK, which plays the kubelet for nodes that carry its
annotation: pods bound there turn Running and Ready, and pods of a Job
complete. No container runs and no packet flows; pod IPs come from a
documentation range so nothing could ever be dialled by mistake.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as kube_config

from tests.harness.addresses import KWOK_NODE_IP, KWOK_PODS
from tests.harness.controlplane import ControlPlane
from tests.harness.engine import binary
from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Enough room that Tide's requests (and both stacks at once) never leave a pod Pending.
_NODE_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "500Gi"}


def kwok_node(name: str) -> dict[str, Any]:
    """A Node KWOK manages: Ready once KWOK's node-initialize stage has run."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": _NODE_CAPACITY, "capacity": _NODE_CAPACITY},
    }


def service_account_kubeconfig(
    admin: Path, namespace: str, account: str, path: Path, *, hours: int = 4
) -> Path:
    """A kubeconfig that acts as ServiceAccount `namespace/account`, from `admin`'s cluster.

    An operator run here as a process gets exactly the RBAC its manifests grant its
    ServiceAccount, as in its pod: the token comes from the TokenRequest API, as the
    kubelet's projected token does. It lasts `hours`; a session ends well within them.
    """
    api = kube_config.new_client_from_config(config_file=str(admin))  # type: ignore[no-untyped-call]
    token = service_account_token(api, namespace, account, hours=hours)
    return kubeconfig_as(admin, account, {"token": token}, path)


def service_account_token(
    api: client.ApiClient, namespace: str, account: str, *, hours: int = 4
) -> str:
    """A token of ServiceAccount `namespace/account` from the TokenRequest API, as the
    kubelet projects into a pod, lasting `hours`."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600)
    )
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, request
    )
    assert token.status is not None, "the TokenRequest API returned no token"
    return str(token.status.token)


def kubeconfig_as(admin: Path, user: str, credentials: dict[str, str], path: Path) -> Path:
    """`admin`'s kubeconfig (same cluster and contexts) acting as `user` with `credentials`."""
    document = yaml.safe_load(admin.read_text())
    document["users"] = [{"name": user, "user": credentials}]
    for context in document["contexts"]:
        context["context"]["user"] = user
    path.write_text(yaml.safe_dump(document))
    return path


class Cluster:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK and its nodes."""

    name = "Kubernetes cluster (controllers, scheduler, KWOK)"

    def __init__(self, workdir: Path, *, nodes: int = 2, address: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.plane = ControlPlane(workdir, address=address)
        self.nodes = [f"kwok-node-{index}" for index in range(nodes)]
        self._processes: list[ManagedProcess] = []

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def start(self, timeout: float = 120.0) -> None:
        self.plane.start()
        try:
            self._start_components(timeout)
        except BaseException:
            self.stop()
            raise

    def _start_components(self, timeout: float) -> None:
        certs = self.workdir / "certs"
        kubeconfig = str(self.kubeconfig)
        kubelet_port = free_port()
        self._processes = [
            ManagedProcess(
                "kube-controller-manager",
                [
                    binary("kube-controller-manager"),
                    f"--kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    # No HTTPS endpoint: nothing scrapes or probes it here.
                    "--secure-port=0",
                    f"--service-account-private-key-file={certs / 'sa.key'}",
                    f"--root-ca-file={certs / 'ca.crt'}",
                    f"--cluster-signing-cert-file={certs / 'ca.crt'}",
                    f"--cluster-signing-key-file={certs / 'ca.key'}",
                    "--use-service-account-credentials=false",
                    # Every default controller; those that need a cloud start only with one.
                    "--controllers=*",
                    # A Job's pods complete at once on KWOK: finish GC and syncs promptly.
                    "--concurrent-gc-syncs=10",
                    # How long the HPA holds its highest recent recommendation before it
                    # scales down (default 5 minutes) is the cluster's choice: Tide's
                    # ScaledObjects set no behaviour. A minute keeps the claim the tests
                    # make (the group comes back down once its lag is gone) and the run
                    # four minutes shorter.
                    "--horizontal-pod-autoscaler-downscale-stabilization=1m",
                ],
                log=self.workdir / "kube-controller-manager.log",
            ),
            ManagedProcess(
                "kube-scheduler",
                [
                    binary("kube-scheduler"),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                ],
                log=self.workdir / "kube-scheduler.log",
            ),
            ManagedProcess(
                "kwok",
                [
                    binary("kwok"),
                    f"--kubeconfig={kubeconfig}",
                    f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                    f"--cidr={KWOK_PODS}",
                    f"--node-ip={KWOK_NODE_IP}",
                    f"--node-port={kubelet_port}",
                    f"--server-address={KWOK_NODE_IP}:{kubelet_port}",
                    "--node-lease-duration-seconds=40",
                ],
                log=self.workdir / "kwok.log",
            ),
        ]
        for process in self._processes:
            process.start()
        api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api)
        for name in self.nodes:
            core.create_node(kwok_node(name))  # type: ignore[arg-type]

        def alive() -> str | None:
            return next((r for p in self._processes if (r := p.exit_reason())), None)

        def ready() -> bool:
            nodes = core.list_node().items
            ready_nodes = [
                n
                for n in nodes
                if any(
                    c.type == "Ready" and c.status == "True"
                    for c in (n.status.conditions if n.status else None) or []
                )
            ]
            # The service account controller runs: pods can be admitted in a new namespace.
            accounts = core.list_namespaced_service_account("default").items
            return len(ready_nodes) == len(self.nodes) and bool(accounts)

        try:
            wait_until(
                ready,
                timeout=timeout,
                what="KWOK nodes Ready and the controllers running",
                interval=0.5,
                alive=alive,
            )
        except (TimeoutError, RuntimeError) as exc:
            dead = [p for p in self._processes if p.exit_reason()] or self._processes
            raise HarnessError(self.name, reason=str(exc), log=dead[0].log) from exc

    def logs(self) -> list[Path]:
        return [p.log for p in self._processes]

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop(timeout=10)
        self.plane.stop()
