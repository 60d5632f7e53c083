"""The RabbitMQ cluster operator, run from its own binary against the harness cluster.

It runs as its `rabbitmq-cluster-operator` ServiceAccount, with the RBAC of the module's
config/rbac at the version Tide pins, put in the namespace and under the name prefix its
config/rbac/kustomization.yaml gives them (what the release's cluster-operator.yml holds).
It reconciles `RabbitmqCluster` objects as in a cluster: it makes the StatefulSet,
Services, ConfigMaps, Secrets and RBAC of each, and writes their status from the
StatefulSet that KWOK's pods make ready. `make control-plane` builds the binary once.

Nothing answers `kubectl exec` on a KWOK pod, so the `rabbitmqctl enable_feature_flag all`
the operator runs in a new cluster's first pod fails, and its `ReconcileSuccess` stays
False; every other condition is the operator's own.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config

from tests.harness.cluster import service_account_kubeconfig
from tests.harness.crds import module_manifests, pinned_module
from tests.harness.webhooks import tools_dir
from tide.waiting import wait_until
from tide_dev.cache import built_tool
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess

VERSION = "v2.16.0"
# config/rbac/kustomization.yaml: `namespace` and `namePrefix`.
NAMESPACE = "rabbitmq-system"
NAME_PREFIX = "rabbitmq-cluster-"
SERVICE_ACCOUNT = f"{NAME_PREFIX}operator"
# main.go's LeaderElectionID: the Lease its controllers start under.
LEASE = "rabbitmq-cluster-operator-leader-election"
MANIFESTS = (
    "config/namespace/base/namespace.yaml",
    "config/rbac/service_account.yaml",
    "config/rbac/role.yaml",
    "config/rbac/role_binding.yaml",
    "config/rbac/leader_election_role.yaml",
    "config/rbac/leader_election_role_binding.yaml",
)
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def kustomized(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """config/rbac as kustomize builds it: prefixed names and references, one namespace.
    Subjects are already written with their built names upstream, so they stay."""
    built = []
    for upstream in documents:
        document = copy.deepcopy(upstream)
        if document["kind"] != "Namespace":
            document["metadata"]["name"] = NAME_PREFIX + document["metadata"]["name"]
        if document["kind"] not in _CLUSTER_SCOPED:
            document["metadata"]["namespace"] = NAMESPACE
        if "roleRef" in document:
            document["roleRef"]["name"] = NAME_PREFIX + document["roleRef"]["name"]
        built.append(document)
    return built


class RabbitMQOperator:
    """The cluster operator as its ServiceAccount, watching the namespaces it is given."""

    name = f"RabbitMQ cluster operator {VERSION}"

    def __init__(self, workdir: Path, *, kubeconfig: Path, namespaces: tuple[str, ...]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self._process: ManagedProcess | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "operator.log"

    def manifests(self) -> list[dict[str, Any]]:
        """The operator's own namespace, ServiceAccount and RBAC, to apply before `start`."""
        source = pinned_module("rabbitmq_cluster_operator", VERSION, self.name)
        documents = module_manifests(source, MANIFESTS, what=self.name,
                                     log=self.workdir / "go-mod.log")  # fmt: skip
        return kustomized(documents)

    def start(self, timeout: float = 120.0) -> None:
        """Start it, and wait until it leads (its controllers run only then)."""
        binary = built_tool(tools_dir(), f"rabbitmq-cluster-operator-{VERSION}", what=self.name)
        kubeconfig = service_account_kubeconfig(
            self.kubeconfig, NAMESPACE, SERVICE_ACCOUNT, self.workdir / "operator.kubeconfig"
        )
        # config/manager/manager.yaml gives the pod its namespace; OPERATOR_SCOPE_NAMESPACE is
        # the operator's documented way to watch only some namespaces.
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "OPERATOR_NAMESPACE": NAMESPACE,
               "OPERATOR_SCOPE_NAMESPACE": ",".join(self.namespaces)}  # fmt: skip
        self._process = ManagedProcess(
            "rabbitmq-cluster-operator",
            [binary, f"--metrics-bind-address=127.0.0.1:{free_port()}"],
            log=self.log,
            env=env,
        )
        self._process.start()
        api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        leases = client.CoordinationV1Api(api)

        def leading() -> bool:
            try:
                lease = leases.read_namespaced_lease(LEASE, NAMESPACE)
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return bool(lease.spec and lease.spec.holder_identity)

        try:
            wait_until(leading, timeout=timeout, what=f"{self.name} holding Lease {LEASE}",
                       interval=0.5, alive=self._process.exit_reason)  # fmt: skip
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise HarnessError(self.name, reason=str(exc), log=self.log) from exc

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=20)
            self._process = None
