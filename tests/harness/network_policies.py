"""kube-network-policies, the NetworkPolicy engine kind ships, enforcing on the real node.

The engine decides in userspace: each new connection's first packet is handed to it
through an NFQUEUE, and it accepts or drops that packet by the NetworkPolicies that
select the pods at either end (pkg/networkpolicy/controller.go, `evaluatePacket`).
Upstream installs the hand-off as nftables rules whose verdict is the `queue`
expression. This machine's kernel is built without that expression (CONFIG_NFT_QUEUE),
so the whole nftables transaction is refused; the controller logs it and goes on
(`Run` ignores the sync's error). The harness installs the same hand-off with iptables'
NFQUEUE target, which the kernel has, in the node's network namespace, rule for rule
with upstream's postrouting chain (after kube-proxy's DNAT, before its SNAT):
- a connection the node's root user opens (the kubelet's probes) is not judged;
- established and related packets pass;
- a new connection from or to a pod is queued. Upstream queues only the pods some
  policy selects (a set it keeps); the engine accepts a pod no policy selects, so
  queueing every pod changes what is decided only in how long it takes.
Nothing else of upstream is replaced: the controller, its informers and its verdicts are
v0.8.0's, run as its DaemonSet runs it (host network, its ServiceAccount's token, the
`kubernetes` Service), with NRI off (containerd 1.6 has none) and the DNS workaround
off (upstream: not needed on kernels 6.12 and later; this one is 6.18).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client, utils

from tests.harness.addresses import API_SERVICE_IP, NODE_PODS
from tests.harness.cluster import service_account_token
from tests.harness.controlplane import binary
from tests.harness.node import Node
from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.process import ManagedProcess

VERSION = "v0.8.0"
NAME = "kube-network-policies"
NAMESPACE = "kube-system"
QUEUE = 100  # upstream's --nfqueue-id default
CHAIN = "TIDE-NETWORK-POLICIES"


def manifests() -> list[dict[str, object]]:
    """The ServiceAccount and cluster-wide read access upstream's chart gives the engine
    (charts/kube-network-policies/templates/serviceaccount.yaml, without the admin
    network policy API, which is off)."""
    name = {"name": NAME}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**name, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": name,
         "rules": [
             {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
              "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": name,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
    ]  # fmt: skip


def _hand_off() -> list[list[str]]:
    """The mangle-table rules that queue what upstream's nftables chain queues, in order."""
    return [
        ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-s", NODE_PODS, "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
        ["-d", NODE_PODS, "-j", "NFQUEUE", "--queue-num", str(QUEUE)],
    ]


class NetworkPolicies:
    """The engine on `node`, enforcing while `enforcing()` is open."""

    name = f"kube-network-policies {VERSION}"

    def __init__(self, workdir: Path, node: Node, api: client.ApiClient, ca: Path) -> None:
        self.workdir = workdir
        self.node = node
        self.api = api
        self.ca = ca
        self.log_path = workdir / f"{NAME}.log"
        self._process: ManagedProcess | None = None

    def _iptables(self, *args: str) -> None:
        self.node.run(["iptables", "-w", "-t", "mangle", *args])

    def _listening(self) -> bool:
        """The engine has bound its queue (it does so after its informers sync and its
        first rule sync): the node's /proc/net lists one line per bound queue, its number
        first."""
        bound = self.node.run(["cat", "/proc/net/netfilter/nfnetlink_queue"])
        return any(line.split()[:1] == [str(QUEUE)] for line in bound.splitlines())

    @contextmanager
    def enforcing(self, timeout: float = 60.0) -> Iterator[None]:
        """Start the engine; once it has bound its queue, hand it every new pod
        connection. On the way out the hand-off goes first, so nothing is left queued to
        an engine that has stopped (the queue has no bypass: upstream fails closed)."""
        utils.create_from_yaml(self.api, yaml_objects=manifests())  # type: ignore[no-untyped-call]
        account = self.workdir / "serviceaccount"
        account.mkdir(parents=True, exist_ok=True)
        (account / "token").write_text(service_account_token(self.api, NAMESPACE, NAME))
        (account / "ca.crt").write_bytes(self.ca.read_bytes())
        (account / "namespace").write_text(NAMESPACE)
        self._process = ManagedProcess(
            NAME,
            self.node.host_network(
                [binary(NAME), f"--hostname-override={self.node.name}",
                 f"--nfqueue-id={QUEUE}", "--disable-nri", "--netfilter-bug-1766-fix=false",
                 "--metrics-bind-address=127.0.0.1:9080", "--v=2"],
                service_account=account,
            ),
            log=self.log_path,
            # What the kubelet gives every pod: the `kubernetes` Service's address.
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                 "KUBERNETES_SERVICE_HOST": API_SERVICE_IP, "KUBERNETES_SERVICE_PORT": "443"},
        )  # fmt: skip
        created = hooked = False
        try:
            self._process.start()
            log = self._process.log
            try:
                wait_until(self._listening, timeout=timeout, interval=0.5,
                           what=f"{NAME} bound to queue {QUEUE}",
                           alive=self._process.exit_reason)  # fmt: skip
            except (TimeoutError, RuntimeError) as exc:
                raise HarnessError(self.name, reason=str(exc), log=log) from exc
            self._iptables("-N", CHAIN)
            created = True
            for rule in _hand_off():
                self._iptables("-A", CHAIN, *rule)
            self._iptables("-I", "POSTROUTING", "1", "-j", CHAIN)
            hooked = True
            yield
        finally:
            try:
                if hooked:
                    self._iptables("-D", "POSTROUTING", "-j", CHAIN)
                if created:
                    self._iptables("-F", CHAIN)
                    self._iptables("-X", CHAIN)
            finally:
                self._process.stop()
                self._process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def sync_error(log: str) -> str | None:
    """Upstream's own report of its nftables sync, if it failed: klog writes the error
    after `error=<`, one line each, up to a line ` >`."""
    lines = iter(log.splitlines())
    for line in lines:
        if '"syncing nftables rules"' in line and "error=" in line:
            rest = line.split("error=", 1)[1]
            if rest != "<":
                return rest
            return " ".join(next_line.strip() for next_line in
                            iter(lines.__next__, " >"))  # fmt: skip
    return None
