"""KEDA's operator and metrics API server, run from their own binaries against the harness cluster.

Both run on this machine as KEDA's `keda-operator` ServiceAccount, with the RBAC, the
Service and the `v1beta1.external.metrics.k8s.io` APIService of KEDA's own manifests,
read from its Go module at the pinned version. Only addresses and certificates change:
- the metrics Service becomes an ExternalName for the metrics server's address (loopback,
  or a real node's address where both run as host-network pods would), and the
  APIService names its port and the harness's CA (the aggregator dials an ExternalName
  Service at the APIService's port, k8s.io/apiserver pkg/util/proxy ResolveCluster);
- the two talk gRPC over loopback with one certificate the harness signs, where upstream
  mounts the `kedaorg-certs` Secret its cert rotation writes.
The HPA controller of kube-controller-manager reads the external metrics through the
aggregation layer, as in a cluster. `make control-plane` builds both binaries once.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config

from tests.harness.cluster import service_account_kubeconfig
from tests.harness.controlplane import write_certificates
from tests.harness.crds import module_manifests, pinned_module
from tests.harness.webhooks import KEDA_VERSION, tools_dir
from tide.waiting import wait_until
from tide_dev.cache import built_tool
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess, answers_ok

NAMESPACE = "keda"
SERVICE_ACCOUNT = "keda-operator"
# Names in config/metrics-server/{service,api_service}.yaml at the pinned version.
METRICS_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
# Everything KEDA's manifests declare for the two processes, except their Deployments
# (run here as processes) and the CRDs (installed by tests/harness/crds.py).
MANIFESTS = (
    "config/general/namespace.yaml",
    "config/service_account/service_account.yaml",
    "config/rbac/role.yaml",
    "config/rbac/role_binding.yaml",
    "config/metrics-server/role.yaml",
    "config/metrics-server/role_binding.yaml",
    "config/metrics-server/service.yaml",
    "config/metrics-server/api_service.yaml",
)
# The names the processes' certificate must carry: the address the adapter dials the
# operator's gRPC service at, and the name the aggregator verifies the adapter by
# (<service>.<namespace>.svc).
CERTIFICATE_HOSTS = ["127.0.0.1", "localhost", f"{METRICS_SERVICE}.{NAMESPACE}.svc"]


def served_at(
    documents: list[dict[str, Any]], port: int, ca_bundle: str, address: str = "127.0.0.1"
) -> list[dict[str, Any]]:
    """KEDA's manifests, the metrics Service and APIService pointed at `address`:`port`."""
    rewritten = []
    for upstream in documents:
        document = copy.deepcopy(upstream)
        if document["kind"] == "Service" and document["metadata"]["name"] == METRICS_SERVICE:
            document["spec"] = {"type": "ExternalName", "externalName": address}
        elif document["kind"] == "APIService":
            document["spec"]["service"]["port"] = port
            document["spec"]["caBundle"] = ca_bundle
        rewritten.append(document)
    return rewritten


class Keda:
    """KEDA's operator and metrics server as `keda-operator`, registered for external metrics."""

    name = "KEDA operator and metrics API server"

    def __init__(
        self,
        workdir: Path,
        *,
        kubeconfig: Path,
        address: str = "127.0.0.1",
        wrap: Callable[[list[str]], list[str]] = lambda argv: argv,
    ) -> None:
        """`address`: where the API server reaches the metrics server and the harness the
        operator's health probe; `wrap`: how each process is run (on a real node, as a
        host-network pod: tests/harness/node.py `host_network`)."""
        self.workdir = workdir
        self.address = address
        self.wrap = wrap
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig
        self.certificates = workdir / "certs"
        self.adapter_port = free_port()
        self.grpc_port = free_port()
        self.health_port = free_port()
        self._processes: list[ManagedProcess] = []

    def manifests(self) -> list[dict[str, Any]]:
        """KEDA's own RBAC, Service and APIService, to apply before `start`."""
        source = pinned_module("keda", KEDA_VERSION, self.name)
        documents = module_manifests(source, MANIFESTS, what=self.name,
                                     log=self.workdir / "go-mod.log")  # fmt: skip
        write_certificates(self.certificates, common_name="keda", hosts=CERTIFICATE_HOSTS)
        ca_bundle = base64.b64encode((self.certificates / "ca.crt").read_bytes()).decode()
        return served_at(documents, self.adapter_port, ca_bundle, self.address)

    def start(self, timeout: float = 180.0) -> None:
        """Start both as the ServiceAccount, and wait until the APIService is Available."""
        operator = built_tool(tools_dir(), "keda-operator", what=self.name)
        adapter = built_tool(tools_dir(), "keda-adapter", what=self.name)
        api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        kubeconfig = service_account_kubeconfig(
            self.kubeconfig, NAMESPACE, SERVICE_ACCOUNT, self.workdir / "keda-operator.kubeconfig"
        )
        certs = str(self.certificates)
        # What config/manager/manager.yaml and config/metrics-server/deployment.yaml give the
        # containers: their namespace, every namespace watched. In a pod the namespace of
        # cluster-scoped objects' Secrets is read from the mounted ServiceAccount; here it
        # is KEDA's documented override (pkg/util/env_resolver.go).
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": NAMESPACE,
               "WATCH_NAMESPACE": "", "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE}  # fmt: skip
        self._processes = [
            ManagedProcess(
                "keda-operator",
                self.wrap(
                    [
                        operator,
                        "--zap-log-level=info",
                        "--zap-encoder=console",
                        "--leader-elect=false",
                        f"--cert-dir={certs}",
                        f"--metrics-service-bind-address=127.0.0.1:{self.grpc_port}",
                        f"--metrics-bind-address=127.0.0.1:{free_port()}",
                        f"--health-probe-bind-address={self.address}:{self.health_port}",
                    ]
                ),
                log=self.workdir / "keda-operator.log",
                env=env,
            ),
            ManagedProcess(
                "keda-adapter",
                self.wrap(
                    [
                        adapter,
                        f"--secure-port={self.adapter_port}",
                        f"--bind-address={self.address}",
                        f"--client-ca-file={certs}/ca.crt",
                        f"--tls-cert-file={certs}/tls.crt",
                        f"--tls-private-key-file={certs}/tls.key",
                        f"--cert-dir={certs}",
                        f"--metrics-service-address=127.0.0.1:{self.grpc_port}",
                        # Its own /metrics listener has no host flag (it binds ":<port>").
                        f"--port={free_port()}",
                        # Out of a pod there is no in-cluster config to fall back on.
                        f"--lister-kubeconfig={kubeconfig}",
                        f"--authentication-kubeconfig={kubeconfig}",
                        f"--authorization-kubeconfig={kubeconfig}",
                        "--v=0",
                    ]
                ),
                log=self.workdir / "keda-adapter.log",
                env=env,
            ),
        ]
        try:
            for process in self._processes:
                process.start()
            self._wait_available(api, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_available(self, api: client.ApiClient, timeout: float) -> None:
        """Until the operator reports ready and the API server reaches the metrics server."""
        registration = client.ApiregistrationV1Api(api)

        def available() -> bool:
            status = registration.read_api_service(API_SERVICE).status
            registered = any(
                c.type == "Available" and c.status == "True"
                for c in (status.conditions if status else None) or []
            )
            return registered and answers_ok(f"http://{self.address}:{self.health_port}/readyz")

        def alive() -> str | None:
            return next((r for p in self._processes if (r := p.exit_reason())), None)

        try:
            wait_until(available, timeout=timeout, what=f"APIService {API_SERVICE} Available",
                       interval=1, alive=alive)  # fmt: skip
        except (TimeoutError, RuntimeError) as exc:
            dead = [p for p in self._processes if p.exit_reason()] or self._processes[-1:]
            raise HarnessError(self.name, reason=str(exc), log=dead[0].log) from exc

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of each process's log, to show why an object was not reconciled."""
        return "\n".join(
            f"--- {p.log}:\n" + "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
            for p in self._processes
            if p.log.exists()
        )

    def stop(self) -> None:
        """Unregister the metrics API, then stop both, as uninstalling KEDA does: an APIService
        whose server is gone fails discovery, and the namespace controller, which must
        list every API to empty a namespace, could then delete no namespace."""
        if self._processes:
            api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
            try:
                client.ApiregistrationV1Api(api).delete_api_service(API_SERVICE)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
        for process in reversed(self._processes):
            process.stop(timeout=20)
        self._processes.clear()
