"""prometheus-operator, run from its own binary against the harness cluster.

It runs as its `prometheus-operator` ServiceAccount with the RBAC of the module's
example/rbac/prometheus-operator manifests at the version kube-prometheus-stack ships, and
reconciles `Prometheus` objects as in a cluster: it selects ServiceMonitors, PodMonitors
and PrometheusRules, and writes the Prometheus configuration (Secret `prometheus-<name>`,
key `prometheus.yaml.gz`) and the rule files (ConfigMaps `prometheus-<name>-rulefiles-<n>`)
that the Prometheus pods would load. `make control-plane` builds the binary once.
"""

from __future__ import annotations

import base64
import gzip
import os
from dataclasses import dataclass
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
from tide_dev.process import ManagedProcess, answers_ok

# The operator kube-prometheus-stack 77.6.2 ships (its CRDs come from the same module).
VERSION = "v0.85.0"
# The Prometheus it deploys by default (DefaultPrometheusVersion, pkg/operator/defaults.go),
# whose promtool checks what it generated; Debian's promtool lacks Kubernetes discovery.
PROMETHEUS_VERSION = "v3.5.0"
NAMESPACE = "default"
SERVICE_ACCOUNT = "prometheus-operator"
_RBAC = "example/rbac/prometheus-operator/prometheus-operator-"
MANIFESTS = tuple(
    f"{_RBAC}{name}.yaml" for name in ("service-account", "cluster-role", "cluster-role-binding")
)


def promtool() -> str:
    """The promtool of the Prometheus the operator deploys, built by `make control-plane`."""
    return built_tool(tools_dir(), f"promtool-{PROMETHEUS_VERSION}", what="promtool")


@dataclass(frozen=True)
class Generated:
    """What the operator generated for one Prometheus: its configuration and rule files."""

    config: str
    # File name -> content, from every rulefiles ConfigMap.
    rule_files: dict[str, str]


class PrometheusOperator:
    """prometheus-operator as its ServiceAccount, watching every namespace."""

    name = f"prometheus-operator {VERSION}"

    def __init__(self, workdir: Path, *, kubeconfig: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self._process: ManagedProcess | None = None

    def manifests(self) -> list[dict[str, Any]]:
        """The operator's own ServiceAccount and RBAC, to apply before `start`."""
        source = pinned_module("kube_prometheus_stack", VERSION, self.name)
        return module_manifests(source, MANIFESTS, what=self.name, log=self.workdir / "go-mod.log")

    def start(self, timeout: float = 120.0) -> None:
        binary = built_tool(tools_dir(), f"prometheus-operator-{VERSION}", what=self.name)
        kubeconfig = service_account_kubeconfig(
            self.kubeconfig, NAMESPACE, SERVICE_ACCOUNT, self.workdir / "operator.kubeconfig"
        )
        self._process = ManagedProcess(
            "prometheus-operator",
            [
                binary,
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log-format=logfmt",
                # The deployment manifest's flag for the kubelet Service is left out: nothing
                # here scrapes kubelets, and it would write Endpoints for KWOK's nodes.
            ],
            log=self.workdir / "prometheus-operator.log",
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
        self._process.start()
        try:
            health = f"http://127.0.0.1:{self.port}/healthz"
            wait_until(lambda: answers_ok(health), timeout=timeout, what=f"{self.name} answering",
                       interval=0.5, alive=self._process.exit_reason)  # fmt: skip
        except (TimeoutError, RuntimeError) as exc:
            log = self._process.log
            self.stop()
            raise HarnessError(self.name, reason=str(exc), log=log) from exc

    def generated(self, namespace: str, prometheus: str, timeout: float = 120.0) -> Generated:
        """The configuration and rule files the operator wrote for `prometheus`."""
        api = kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api)
        secret = f"prometheus-{prometheus}"
        found: dict[str, Any] = {}

        def written() -> bool:
            try:
                data = core.read_namespaced_secret(secret, namespace).data or {}
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            found["config"] = data.get("prometheus.yaml.gz")
            return found["config"] is not None

        assert self._process is not None, "start() first"
        try:
            wait_until(written, timeout=timeout, what=f"Secret {namespace}/{secret} written",
                       interval=1, alive=self._process.exit_reason)  # fmt: skip
        except (TimeoutError, RuntimeError) as exc:
            raise HarnessError(self.name, reason=str(exc), log=self._process.log) from exc
        config = gzip.decompress(base64.b64decode(found["config"])).decode()
        rule_files: dict[str, str] = {}
        prefix = f"prometheus-{prometheus}-rulefiles-"
        for config_map in core.list_namespaced_config_map(namespace).items:
            name = (config_map.metadata.name if config_map.metadata else None) or ""
            if name.startswith(prefix):
                rule_files.update(config_map.data or {})
        return Generated(config=config, rule_files=rule_files)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=20)
            self._process = None
