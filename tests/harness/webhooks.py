"""KEDA's and CloudNativePG's admission webhooks, run from their own binaries beside the API server.

Each project's webhook server runs on this machine with a serving certificate the harness
signs, and is registered with the project's own Validating/MutatingWebhookConfigurations,
read at run time from its Go module at the pinned version: every path, rule,
failurePolicy and sideEffects stays as upstream declares it; only `clientConfig` moves
from an in-cluster Service to https://127.0.0.1:<port><path> with the harness's CA.
`make control-plane` builds both binaries once (tests/harness/tools/build-operators.sh).
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.controlplane import write_certificates
from tests.harness.crds import GoModuleCrds, module_manifests, pinned_module
from tide.waiting import wait_until
from tide_dev.cache import built_tool, cache_dir
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess

# The binaries are built at exactly these versions; each must be the one whose CRDs
# tests/harness/crds.py installs for the pinned chart (checked in `start`).
KEDA_VERSION = "v2.17.2"
CNPG_VERSION = "v1.27.0"
WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
# Where CloudNativePG's manager runs its controllers: a namespace nothing is deployed to,
# so they reconcile nothing while the same process serves the webhooks for every namespace.
CNPG_IDLE_NAMESPACE = "cnpg-webhooks-only"
# A module download that takes this long is stuck, not slow.
DOWNLOAD_TIMEOUT_SECONDS = 600


def tools_dir() -> Path:
    return cache_dir() / "tools" / f"operators-keda-{KEDA_VERSION}-cnpg-{CNPG_VERSION}"


@dataclass(frozen=True)
class Listeners:
    """The loopback ports one webhook server listens on."""

    webhook: int
    metrics: int
    health: int


@dataclass(frozen=True)
class WebhookServer:
    """One project's webhook server: its binary, its manifests, and an object it must refuse."""

    name: str
    # The field of infra.config.Versions (and key of crds.SOURCES) that pins the project.
    component: str
    version: str
    binary: str
    # Files in the project's Go module holding its webhook configurations.
    manifests: tuple[str, ...]
    # The command line and environment for its binary, ports, certificates and kubeconfig.
    command: Callable[[Path, Listeners, Path, Path], tuple[list[str], dict[str, str]]]
    # An object the schema accepts and the server's validating webhook `refused_by` refuses:
    # the API server consults the webhook once a dry run of it is refused.
    probe: dict[str, Any]
    refused_by: str


def _keda_command(
    binary: Path, ports: Listeners, certs: Path, kubeconfig: Path
) -> tuple[list[str], dict[str, str]]:
    # Flags of cmd/webhooks/main.go at v2.17.2. The webhook listener has no host flag
    # (controller-runtime binds ":<port>"); every other listener is put on loopback.
    argv = [
        str(binary),
        f"--port={ports.webhook}",
        f"--cert-dir={certs}",  # tls.crt and tls.key, controller-runtime's default names
        f"--metrics-bind-address=127.0.0.1:{ports.metrics}",
        f"--health-probe-bind-address=127.0.0.1:{ports.health}",
        "--zap-encoder=console",
        "--zap-log-level=info",
    ]
    # What config/webhooks/webhooks.yaml gives the container: its namespace, and all watched.
    return argv, {"KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": "keda", "WATCH_NAMESPACE": ""}


def _cnpg_command(
    binary: Path, ports: Listeners, certs: Path, kubeconfig: Path
) -> tuple[list[str], dict[str, str]]:
    # The webhooks live in an internal package of cmd/manager's `controller` subcommand, so
    # no other binary can serve them: the whole manager runs, its controllers confined to an
    # empty namespace. WEBHOOK_CERT_DIR (meant for OLM) makes it serve the certificate in
    # that directory instead of creating a CA Secret and patching the webhook
    # configurations (internal/cmd/manager/controller/controller.go at v1.27.0).
    # The webhook listener has no host flag (controller-runtime binds ":<port>"); the
    # metrics listener is put on loopback, pprof and the health probe are off by default.
    argv = [
        str(binary),
        "controller",
        f"--webhook-port={ports.webhook}",
        f"--metrics-bind-address=127.0.0.1:{ports.metrics}",
        "--leader-elect=false",
    ]
    env = {
        "KUBECONFIG": str(kubeconfig),
        "OPERATOR_NAMESPACE": CNPG_IDLE_NAMESPACE,
        "WATCH_NAMESPACE": CNPG_IDLE_NAMESPACE,
        "WEBHOOK_CERT_DIR": str(certs),
    }
    return argv, env


# Probes live in `default`, the one namespace every API server has.
_HOURLY = {
    "type": "cron",
    "metadata": {
        "timezone": "UTC",
        "start": "0 * * * *",
        "end": "5 * * * *",
        "desiredReplicas": "1",
    },
}
_KEDA_PROBE = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "webhook-probe", "namespace": "default"},
    "spec": {
        "scaleTargetRef": {"name": "webhook-probe"},
        # Trigger names must be unique (apis/keda/v1alpha1/scaletriggers_types.go).
        "triggers": [{**_HOURLY, "name": "twice"}, {**_HOURLY, "name": "twice"}],
    },
}
_CNPG_PROBE = {
    "apiVersion": "postgresql.cnpg.io/v1",
    "kind": "Cluster",
    "metadata": {"name": "webhook-probe", "namespace": "default"},
    # "latest" hides upgrades, so the validator refuses it (validateImageName).
    "spec": {
        "instances": 1,
        "imageName": "ghcr.io/cloudnative-pg/postgresql:latest",
        "storage": {"size": "1Gi"},
    },
}

SERVERS = (
    WebhookServer(
        name="KEDA admission webhooks",
        component="keda",
        version=KEDA_VERSION,
        binary="keda-admission-webhooks",
        manifests=("config/webhooks/validation_webhooks.yaml",),
        command=_keda_command,
        probe=_KEDA_PROBE,
        refused_by="vscaledobject.kb.io",
    ),
    WebhookServer(
        name="CloudNativePG webhooks (manager controller)",
        component="cloudnative_pg",
        version=CNPG_VERSION,
        binary="cnpg-manager",
        manifests=("config/webhook/manifests.yaml",),
        command=_cnpg_command,
        probe=_CNPG_PROBE,
        refused_by="vcluster.cnpg.io",
    ),
)


def _module_source(server: WebhookServer) -> GoModuleCrds:
    return pinned_module(server.component, server.version, server.name)


def on_loopback(documents: list[dict[str, Any]], port: int, ca_bundle: str) -> list[dict[str, Any]]:
    """Upstream's webhook configurations, each webhook's Service swapped for a loopback URL."""
    configurations = []
    for document in documents:
        if document.get("kind") not in WEBHOOK_KINDS:
            continue
        rewritten = copy.deepcopy(document)
        for webhook in rewritten["webhooks"]:
            path = webhook["clientConfig"]["service"].get("path", "/")
            webhook["clientConfig"] = {
                "url": f"https://127.0.0.1:{port}{path}",
                "caBundle": ca_bundle,
            }
        configurations.append(rewritten)
    return configurations


class AdmissionWebhooks:
    """KEDA's and CloudNativePG's webhook servers, and the configurations that register them."""

    def __init__(self, workdir: Path, *, kubeconfig: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        # A CA of their own, handed to the API server as each webhook's caBundle.
        self.certificates = workdir / "certs"
        self._running: list[tuple[WebhookServer, Listeners, ManagedProcess]] = []

    def start(self, timeout: float = 120.0) -> None:
        """Start every server and wait until each serves TLS with the harness's certificate.

        The upstream CRDs must be established first: CloudNativePG's manager watches them.
        """
        for server in SERVERS:
            _module_source(server)
            built_tool(tools_dir(), server.binary, what=server.name)
        write_certificates(self.certificates, common_name="admission-webhooks", hosts=["127.0.0.1"])
        cnpg_certs = self.workdir / "cnpg-certs"
        cnpg_certs.mkdir(exist_ok=True)
        # The file names controller.go uses when WEBHOOK_CERT_DIR is set.
        shutil.copyfile(self.certificates / "tls.crt", cnpg_certs / "apiserver.crt")
        shutil.copyfile(self.certificates / "tls.key", cnpg_certs / "apiserver.key")
        certs = {"keda": self.certificates, "cloudnative_pg": cnpg_certs}
        try:
            for server in SERVERS:
                ports = Listeners(webhook=free_port(), metrics=free_port(), health=free_port())
                binary = tools_dir() / server.binary
                argv, env = server.command(binary, ports, certs[server.component], self.kubeconfig)
                process = ManagedProcess(
                    server.binary,
                    argv,
                    log=self.workdir / f"{server.binary}.log",
                    env={**os.environ, **env},
                )
                process.start()
                self._running.append((server, ports, process))
            for server, ports, process in self._running:
                self._wait_serving(server, ports, process, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_serving(
        self, server: WebhookServer, ports: Listeners, process: ManagedProcess, timeout: float
    ) -> None:
        try:
            wait_until(
                lambda: self._serves_tls(ports.webhook),
                timeout=timeout,
                what=f"{server.name} serving TLS on 127.0.0.1:{ports.webhook}",
                interval=0.5,
                alive=process.exit_reason,
            )
        except (TimeoutError, RuntimeError) as exc:
            raise HarnessError(server.name, reason=str(exc), log=process.log) from exc

    def _serves_tls(self, port: int) -> bool:
        context = ssl.create_default_context(cafile=str(self.certificates / "ca.crt"))
        url = f"https://127.0.0.1:{port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return True
        except urllib.error.HTTPError:
            return True  # an HTTP answer over verified TLS: the server is up
        except (urllib.error.URLError, OSError):
            return False

    def configurations(self) -> list[dict[str, Any]]:
        """Each running server's upstream webhook configurations, pointed at it on loopback."""
        ca_bundle = base64.b64encode((self.certificates / "ca.crt").read_bytes()).decode()
        documents: list[dict[str, Any]] = []
        for server, ports, _ in self._running:
            source = _module_source(server)
            log = self.workdir / "go-mod.log"
            upstream = module_manifests(source, server.manifests, what=server.name, log=log)
            found = on_loopback(upstream, ports.webhook, ca_bundle)
            if not found:
                raise HarnessError(
                    server.name,
                    reason=f"no webhook configuration in {', '.join(server.manifests)} of {source}",
                    fix=f"correct the manifests of {server.binary} in tests/harness/webhooks.py",
                )
            documents.extend(found)
        return documents

    def wait_consulted(
        self, refusal: Callable[[dict[str, Any]], str | None], timeout: float = 30.0
    ) -> None:
        """Until the API server calls each server: its probe's dry run is refused by its webhook.

        `refusal` dry-runs an object and returns the API server's refusal message, or None.
        The API server picks up new webhook configurations a moment after they are stored.
        """
        for server, _, process in self._running:
            _wait_refused(server, process, refusal, timeout)

    def stop(self) -> None:
        for _, _, process in reversed(self._running):
            process.stop(timeout=20)
        self._running.clear()


def _wait_refused(
    server: WebhookServer,
    process: ManagedProcess,
    refusal: Callable[[dict[str, Any]], str | None],
    timeout: float,
) -> None:
    denied = f'admission webhook "{server.refused_by}" denied the request'
    answers: list[str] = []

    def refused() -> bool:
        answers.append(refusal(server.probe) or "accepted")
        return denied in answers[-1]

    try:
        wait_until(
            refused,
            timeout=timeout,
            what=f"the API server consulting {server.refused_by}",
            interval=0.5,
            alive=process.exit_reason,
        )
    except (TimeoutError, RuntimeError) as exc:
        last = answers[-1] if answers else "none"
        raise HarnessError(
            server.name, reason=f"{exc}; the probe's last answer: {last}", log=process.log
        ) from exc
