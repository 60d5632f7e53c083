"""A real Kubernetes control plane on loopback: etcd and kube-apiserver, built from Go modules.

No kubelet, scheduler or controller-manager runs: objects are stored, validated
and admitted (strict field validation, CRD schemas, Pod Security, admission
webhooks) exactly as a cluster's API server does, but nothing is reconciled.
The aggregation layer is configured as kubeadm does, so an extension API server
(KEDA's external metrics) can be registered with an APIService.
`make tools` builds both binaries once (tests/harness/tools/build-control-plane.sh).
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.addresses import API_SERVICE_IP, CLUSTER_DOMAIN, SERVICES
from tide.waiting import wait_until
from tide_dev.cache import built_tool, cache_dir
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess

# The oldest Kubernetes Tide supports; the binaries are built at exactly these versions.
KUBE_VERSION = "v1.33.13"
ETCD_VERSION = "v3.5.21"
# The identity the tests act as: a member of system:masters, like a cluster admin.
ADMIN_TOKEN = "tide-harness-admin"
# kubeadm's name for the aggregation layer's client certificate.
FRONT_PROXY_CLIENT = "front-proxy-client"


def tools_dir() -> Path:
    return cache_dir() / "tools" / f"controlplane-{KUBE_VERSION}"


def binary(name: str) -> str:
    """A Kubernetes binary `make control-plane` built at KUBE_VERSION."""
    return built_tool(tools_dir(), name)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise HarnessError("openssl", reason=f"openssl {' '.join(args)}: {result.stderr.strip()}")


def write_certificates(directory: Path, *, common_name: str, hosts: list[str]) -> None:
    """A CA and a serving certificate for `hosts` (ca.crt, tls.crt, tls.key) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={common_name}-ca", "-keyout", "ca.key", "-out", "ca.crt",
        cwd=directory,
    )  # fmt: skip
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    (directory / "san.cnf").write_text(f"subjectAltName={san}\n")
    _signed(directory, "tls", f"/CN={common_name}", "-extfile", "san.cnf")


def client_certificate(ca_dir: Path, name: str, *, organization: str, common_name: str) -> None:
    """`name`.crt and `name`.key in `ca_dir`: a client certificate its CA signs, for
    O=`organization`, CN=`common_name` (Kubernetes' group and user)."""
    _signed(ca_dir, name, f"/O={organization}/CN={common_name}")


def _signed(ca_dir: Path, name: str, subject: str, *extensions: str) -> None:
    """`name`.key and `name`.crt for `subject`, signed by the CA in `ca_dir`."""
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=ca_dir,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", *extensions, "-out", f"{name}.crt",
        cwd=ca_dir,
    )  # fmt: skip


class ControlPlane:
    """etcd plus kube-apiserver on free ports, with a kubeconfig for a cluster admin."""

    name = "Kubernetes control plane"

    def __init__(self, workdir: Path, *, address: str = "127.0.0.1") -> None:
        """`address`: where kube-apiserver listens; a real node's kubelet must reach it."""
        self.workdir = workdir
        self.address = address
        self.port = free_port()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.kubeconfig = workdir / "kubeconfig"
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    @property
    def serves_pods(self) -> bool:
        """Whether pods on a real node dial it (through the `kubernetes` Service): it listens
        on the node's link rather than loopback."""
        return not ipaddress.ip_address(self.address).is_loopback

    def start(self, timeout: float = 90.0) -> None:
        etcd, apiserver = binary("etcd"), binary("kube-apiserver")
        certs = self.workdir / "certs"
        hosts = {self.address, "127.0.0.1", "localhost"}
        if self.serves_pods:
            # What a pod dials: the `kubernetes` Service, by address and by name.
            hosts |= {API_SERVICE_IP, "kubernetes.default.svc",
                      f"kubernetes.default.svc.{CLUSTER_DOMAIN}"}  # fmt: skip
        write_certificates(certs, common_name="kube-apiserver", hosts=sorted(hosts))
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=certs)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=certs)
        (certs / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin,"system:masters"\n')
        # The aggregation layer's front proxy: the API server presents this client certificate
        # to an extension API server (KEDA's metrics server), which trusts the CA for it
        # through the extension-apiserver-authentication ConfigMap, as on kubeadm's clusters.
        # What the API server presents to kubelets (logs, exec, port-forward).
        client_certificate(certs, "kubelet-client", organization="system:masters",
                           common_name="kube-apiserver-kubelet-client")  # fmt: skip
        front_proxy = certs / "front-proxy"
        write_certificates(front_proxy, common_name=FRONT_PROXY_CLIENT, hosts=["127.0.0.1"])
        self._etcd = ManagedProcess(
            "etcd",
            [
                etcd,
                "--name=harness",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
                f"--initial-cluster=harness=http://127.0.0.1:{self.etcd_peer_port}",
                # Throwaway data: durability only costs time on a busy disk.
                "--unsafe-no-fsync",
            ],
            log=self.workdir / "etcd.log",
        )
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            [
                apiserver,
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--token-auth-file={certs / 'tokens.csv'}",
                # Node: a kubelet acts as system:node:<name> on its own node and pods.
                "--authorization-mode=Node,RBAC",
                f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
                f"--kubelet-client-key={certs / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--anonymous-auth=false",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICES}",
                # The `kubernetes` Service's endpoint is this server's own address, which
                # only a real node's pods can reach (and the API server will not publish
                # loopback): on KWOK-only clusters there is none to keep.
                f"--endpoint-reconciler-type={'lease' if self.serves_pods else 'none'}",
                "--profiling=false",
                f"--requestheader-client-ca-file={front_proxy / 'ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy / 'tls.crt'}",
                f"--proxy-client-key-file={front_proxy / 'tls.key'}",
            ],
            log=self.workdir / "kube-apiserver.log",
        )
        self._etcd.start()
        self._apiserver.start()
        self._write_kubeconfig(certs / "ca.crt")
        try:
            wait_until(
                self.ready,
                timeout=timeout,
                what=f"kube-apiserver answering /readyz on {self.url}",
                interval=0.5,
                alive=lambda: self._apiserver.exit_reason() or self._etcd.exit_reason(),  # type: ignore[union-attr]
            )
        except (TimeoutError, RuntimeError) as exc:
            log = self._apiserver.log
            self.stop()
            raise HarnessError(self.name, reason=str(exc), log=log) from exc

    def ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.workdir / "certs" / "ca.crt"))
        url, auth = f"{self.url}/readyz", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        request = urllib.request.Request(url, headers=auth)  # noqa: S310 - https on loopback
        try:
            with urllib.request.urlopen(  # noqa: S310 - https on loopback
                request, timeout=2, context=context
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _write_kubeconfig(self, ca: Path) -> None:
        self.kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: harness
  cluster: {{server: "{self.url}", certificate-authority: "{ca}"}}
users:
- name: admin
  user: {{token: "{ADMIN_TOKEN}"}}
contexts:
- name: harness
  context: {{cluster: harness, user: admin}}
current-context: harness
"""
        )

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in (self._apiserver, self._etcd):
            if process is not None:
                process.stop(timeout=20)
