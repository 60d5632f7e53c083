"""A real node: kubelet and its own containerd in a network and mount namespace of their own.

The node lives in a network namespace the harness makes, joined to the host by one veth
pair whose two ends carry documentation-range addresses; pods get addresses from another
documentation range on a bridge inside that namespace. Its processes share a private
mount namespace in which /run, /var/lib and /var/log are fresh tmpfs mounts, so nothing
the kubelet, containerd, runc or the CNI plugins write there (pod logs, CNI results,
shim sockets) reaches the host, and every mount they make vanishes with them. The
iptables chains the kubelet and the CNI plugins add are the namespace's own.

What the node still changes on the host, and puts back:
- the kubelet's cgroups, all below one cgroup root of its own in every v1 controller;
- three global sysctls the kubelet sets at start (vm.overcommit_memory, kernel.panic,
  kernel.panic_on_oops), restored as soon as it is up and again at the end;
- the namespace itself and its veth pair.
A run that is killed leaves a state file behind; the next run puts that back first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from kubernetes import client
from kubernetes import config as kube_config

from tests.harness.addresses import (
    CLUSTER_DOMAIN,
    DNS_SERVICE_IP,
    NODE_LINK,
    NODE_LINK_HOST,
    NODE_LINK_NODE,
    NODE_PODS,
    SERVICES,
)
from tests.harness.cluster import kubeconfig_as
from tests.harness.controlplane import client_certificate
from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.process import ManagedProcess, require

# The kubelet's kernel tunables (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables).
KUBELET_SYSCTLS = ("vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic",
                   "kernel.panic_on_oops")  # fmt: skip
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where a run records what it changed, for the next run to put back if this one is killed.
STATE_DIR = Path("/run/tide-node")


def sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


def _put_back_sysctls(state_file: Path) -> None:
    """The sysctls a node's run recorded before the kubelet changed them, set again."""
    for name, value in json.loads(state_file.read_text())["sysctls"].items():
        Path("/proc/sys", *name.split(".")).write_text(value)


def _ip(*args: str) -> None:
    result = subprocess.run([require("ip"), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError("node network", reason=f"ip {' '.join(args)}: {result.stderr.strip()}")


def _controllers(*, unified: bool = False) -> list[Path]:
    """Every cgroup v1 hierarchy (the kubelet needs its root in each); with `unified`, also
    the cgroup2 one of hybrid mode, where the kubelet makes cgroups of its own too."""
    return [
        path
        for path in sorted(CGROUP_ROOT.iterdir())
        if path.is_dir()
        and (unified or path.name != "unified")
        and (path / "cgroup.procs").exists()
    ]


def _remove_cgroups(name: str) -> None:
    """Kill what runs below `name` in every controller, then remove its cgroups, deepest first."""
    roots = [c / name for c in _controllers(unified=True) if (c / name).exists()]
    for root in roots:
        for procs in root.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for root in roots:

        def empty() -> bool:
            return not any(p.read_text().strip() for p in root.rglob("cgroup.procs"))  # noqa: B023

        wait_until(empty, timeout=20, what=f"{root} emptied")
        for directory in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if directory.is_dir():
                directory.rmdir()
        root.rmdir()


class Node:
    """One kubelet node, registered as `name` with the control plane it `start`s against."""

    def __init__(self, workdir: Path, *, name: str, kubelet: str, kube_proxy: str) -> None:
        self.workdir = workdir
        self.name = name
        self.kubeconfig = workdir / "kubelet.kubeconfig"
        self.proxy_kubeconfig = workdir / "kube-proxy.kubeconfig"
        self.kubelet_binary = kubelet
        self.kube_proxy_binary = kube_proxy
        self.id = f"tide-node-{os.getpid()}"
        self.veth = f"tn{os.getpid() % 100000}"
        self.socket = workdir / "containerd" / "containerd.sock"
        self._holder: ManagedProcess | None = None
        # nsenter's argv into the holder's namespaces, once the holder runs.
        self._inside: list[str] = []
        self._processes: list[ManagedProcess] = []

    # -- host state ---------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return STATE_DIR / f"{self.id}.json"

    def _record(self) -> None:
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        state = {"netns": self.id, "veth": self.veth, "cgroup": self.id,
                 "sysctls": {name: sysctl(name) for name in KUBELET_SYSCTLS}}  # fmt: skip
        self._state_file.write_text(json.dumps(state))

    @staticmethod
    def restore(state_file: Path) -> None:
        """Put back what the run that wrote `state_file` changed, and forget it."""
        _put_back_sysctls(state_file)
        state = json.loads(state_file.read_text())
        # The node's own processes first (the kubelet would restart pods), containerd's shims
        # among them: they outlive containerd by design. Then what runs in its cgroups.
        for pid in _pids_naming(state["netns"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _remove_cgroups(state["cgroup"])
        with contextlib.suppress(HarnessError):  # already gone
            _ip("netns", "delete", state["netns"])
        wait_until(lambda: not _link_exists(state["veth"]), timeout=20,
                   what=f"veth {state['veth']} gone with its namespace")  # fmt: skip
        state_file.unlink()
        with contextlib.suppress(OSError):  # left while another run's state is in it
            STATE_DIR.rmdir()

    @classmethod
    def restore_all(cls) -> list[str]:
        """What killed runs left behind, put back; their names. Each state file is named by
        the process that ran its node."""
        if not STATE_DIR.exists():
            return []
        restored = []
        for state_file in sorted(STATE_DIR.glob("tide-node-*.json")):
            owner = int(state_file.stem.rsplit("-", 1)[1])
            if Path(f"/proc/{owner}").exists():
                continue  # a run still going (its test process is alive) keeps its node
            cls.restore(state_file)
            restored.append(state_file.stem)
        return restored

    # -- lifecycle ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Put back what killed runs left, then make the node's network namespace and link:
        the API server listens on the link's host end, so this comes before it starts."""
        if os.geteuid() != 0:
            raise HarnessError(
                "node",
                reason="a node needs root: namespaces, cgroups, veth links, sysctls",
                fix="run make test as root (CI does)",
            )
        self.restore_all()
        self._record()
        try:
            self._network()
        except BaseException:
            self.stop()
            raise

    def start(
        self, images: list[Path], *, admin: Path, certs: Path, timeout: float = 120.0
    ) -> None:
        """Join the cluster that `admin` (a kubeconfig) names, whose CA is in `certs`: start
        containerd, the kubelet and kube-proxy in the node's namespaces, import `images`
        (docker save archives), and wait until the node is Ready."""
        self.ca = certs / "ca.crt"
        try:
            # The kubelet as system:node:<name> in system:nodes, which the Node authorizer
            # scopes to its node; kube-proxy as the user the bootstrap policy's
            # system:node-proxier binding names.
            _certified_kubeconfig(admin, certs, f"system:node:{self.name}", "system:nodes",
                                  self.kubeconfig)  # fmt: skip
            _certified_kubeconfig(admin, certs, "system:kube-proxy", "system:node-proxier",
                                  self.proxy_kubeconfig)  # fmt: skip
            self._start_holder()
            self._start_containerd()
            for image in images:
                self.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", "images",
                               "import", str(image)])  # fmt: skip
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_ready(timeout)
            # Set once at its start: put back now, so the host runs with its own values.
            _put_back_sysctls(self._state_file)
        except BaseException:
            self.stop()
            raise

    def _network(self) -> None:
        prefix = NODE_LINK.split("/")[1]
        _ip("netns", "add", self.id)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.id)
        _ip("addr", "add", f"{NODE_LINK_HOST}/{prefix}", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        _ip("-n", self.id, "addr", "add", f"{NODE_LINK_NODE}/{prefix}", "dev", "eth0")
        _ip("-n", self.id, "link", "set", "eth0", "up")
        _ip("-n", self.id, "link", "set", "lo", "up")
        # The node's own processes (host-network pods) need a route to a ClusterIP for the
        # kernel to let them connect at all: kube-proxy rewrites the destination only after
        # routing (its OUTPUT chain). A node has its default route for that; this one has
        # the Services' range towards the host. What kube-proxy did not rewrite (an address
        # no Service has) is refused at the link, never sent on: these rules come first in
        # the node's own tables, before the kubelet's, CNI's and kube-proxy's.
        _ip("-n", self.id, "route", "add", SERVICES, "via", NODE_LINK_HOST, "dev", "eth0")
        for chain in ("OUTPUT", "FORWARD"):
            _ip("netns", "exec", self.id, require("iptables"), "-I", chain, "1",
                "-d", SERVICES, "-o", "eth0", "-j", "REJECT")  # fmt: skip
        # Pods answer the host directly (a Service's endpoint there sees the pod's address,
        # as in a cluster); the route goes with the link.
        _ip("route", "add", NODE_PODS, "via", NODE_LINK_NODE, "dev", self.veth)

    def _start_holder(self) -> None:
        """The process whose namespaces the node's processes enter: the node's network, and
        a private mount namespace with its own /run, /var/lib and /var/log."""
        mounts = " && ".join(
            f"mount -t tmpfs tide-node {d}" for d in ("/run", "/var/lib", "/var/log")
        )
        self._holder = ManagedProcess(
            "node-namespaces",
            [require("unshare"), "--mount", "--propagation", "private",
             require("nsenter"), f"--net=/run/netns/{self.id}",
             "sh", "-c", f"{mounts} && echo ready && exec sleep infinity"],
            log=self.workdir / "namespaces.log",
        )  # fmt: skip
        self._holder.start()
        wait_until(lambda: "ready" in self._holder.log.read_text(), timeout=10,  # type: ignore[union-attr]
                   what="the node's namespaces", alive=self._holder.exit_reason)  # fmt: skip
        # The `sleep` the holder's shell became (the reaper leads the group) is the one
        # process in the node's network namespace so far.
        (holder,) = _pids_naming(self.id)
        self._inside = [require("nsenter"), "-t", str(holder), "-m", "-n"]

    def host_network(self, argv: list[str], *, service_account: Path | None = None) -> list[str]:
        """`argv` as a pod with hostNetwork and dnsPolicy ClusterFirstWithHostNet runs: in the
        node's network namespace, resolving names through cluster DNS. The resolv.conf is
        bound over /etc/resolv.conf in a mount namespace of the process's own, so neither
        the host nor the node's kubelet sees it; so is `service_account` (a directory with
        `token`, `ca.crt` and `namespace`) where a pod has its ServiceAccount mounted."""
        assert self._inside, "start the node first"
        resolv = self.workdir / "cluster-first.resolv.conf"
        search = f"svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
        resolv.write_text(f"nameserver {DNS_SERVICE_IP}\nsearch {search}\noptions ndots:5\n")
        bind = 'mount --bind "$0" /etc/resolv.conf'
        if service_account is not None:
            # /var/run is /run, the node's own tmpfs: the mount point is made there.
            bind += (f" && mkdir -p {POD_SERVICE_ACCOUNT}"
                     f" && mount --bind {service_account} {POD_SERVICE_ACCOUNT}")  # fmt: skip
        return [*self._inside, require("unshare"), "--mount", "--propagation", "private",
                "sh", "-c", f'{bind} && exec "$@"', str(resolv), *argv]  # fmt: skip

    def run(self, argv: list[str]) -> str:
        """`argv` run to completion in the node's namespaces (as the node's root user); its
        output."""
        result = subprocess.run([*self._inside, *argv], capture_output=True, text=True,
                                check=False)  # fmt: skip
        if result.returncode != 0:
            raise HarnessError("node", reason=f"{' '.join(argv)}: {result.stderr.strip()}")
        return result.stdout

    def _enter(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, [*self._inside, *argv], log=self.workdir / f"{name}.log")
        process.start()
        self._processes.append(process)
        return process

    def _start_containerd(self) -> None:
        state = self.workdir / "containerd"
        cni = self.workdir / "cni"
        cni.mkdir(parents=True, exist_ok=True)
        (cni / "10-tide.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "tide", "plugins": [
                # isDefaultGateway: pods route everything through the node, where kube-proxy
                # translates Service addresses.
                {"type": "bridge", "bridge": "tide0", "isDefaultGateway": True, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": NODE_PODS}]],
                          "dataDir": str(self.workdir / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                # Docker leaves the FORWARD policy at DROP; this plugin admits pod traffic.
                {"type": "firewall"},
            ]}))  # fmt: skip
        config = self.workdir / "containerd.toml"
        # restrict_oom_score_adj: root here may not set oom_score_adj below its own, and
        # without it every sandbox fails ("can't get final child's PID from pipe: EOF").
        config.write_text(f"""version = 2
root = "{state}/root"
state = "{state}/state"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
""")
        containerd = self._enter("containerd", [require("containerd"), "--config", str(config)])
        wait_until(self.socket.exists, timeout=30, what="containerd serving",
                   alive=containerd.exit_reason)  # fmt: skip

    def _start_kubelet(self) -> None:
        for controller in _controllers():
            (controller / self.id).mkdir(exist_ok=True)
        config = self.workdir / "kubelet.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.id}",
            "failSwapOn": False,
            "address": NODE_LINK_NODE,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(self.ca)}},
            "authorization": {"mode": "AlwaysAllow"},
            "resolvConf": str(self._resolv_conf()),
            "clusterDNS": [DNS_SERVICE_IP],
            "clusterDomain": CLUSTER_DOMAIN,
            "enforceNodeAllocatable": [],
            "evictionHard": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }))  # fmt: skip
        self._enter("kubelet", [
            self.kubelet_binary, f"--config={config}", f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.workdir / 'kubelet'}", f"--hostname-override={self.name}",
            f"--node-ip={NODE_LINK_NODE}", "--v=1",
        ])  # fmt: skip

    def _start_kube_proxy(self) -> None:
        """kube-proxy in iptables mode, in the node's network namespace: the Service rules
        are the namespace's own. What it would set host-wide is left alone: the conntrack
        table size (maxPerCore 0), and route_localnet (NodePorts only on the node's address)."""
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.proxy_kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": NODE_PODS,
            "bindAddress": NODE_LINK_NODE,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{NODE_LINK_NODE}/32"],
            "conntrack": {"maxPerCore": 0, "min": 0},
        }))  # fmt: skip
        self._enter("kube-proxy", [self.kube_proxy_binary, f"--config={config}", "--v=1"])

    def _resolv_conf(self) -> Path:
        path = self.workdir / "resolv.conf"
        path.write_text("")  # no upstream resolver: nothing leaves the node by name
        return path

    def _wait_ready(self, timeout: float) -> None:
        api = client.CoreV1Api(
            kube_config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        )

        def ready() -> bool:
            try:
                node = api.read_node(self.name)
            except client.ApiException:
                return False
            conditions = (node.status.conditions if node.status else None) or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        def alive() -> str | None:
            return next((r for p in self._processes if (r := p.exit_reason())), None)

        wait_until(ready, timeout=timeout, what=f"node {self.name} Ready", interval=1, alive=alive)

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop(timeout=20)
        self._processes = []
        if self._holder is not None:
            self._holder.stop(timeout=10)
            self._holder = None
        if self._state_file.exists():
            self.restore(self._state_file)


PAUSE_IMAGE = "tide.local/pause:1"
# Where the kubelet mounts a pod's ServiceAccount (client-go's rest.InClusterConfig reads it).
POD_SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _pids_naming(netns: str) -> list[int]:
    """Every process in the named network namespace (the holder, containerd, the kubelet
    and containerd's shims, which outlive containerd by design)."""
    try:
        inode = os.stat(f"/run/netns/{netns}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for ns in Path("/proc").glob("[0-9]*/ns/net"):
        with contextlib.suppress(OSError):
            if os.stat(ns).st_ino == inode:
                pids.append(int(ns.parent.parent.name))
    return pids


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _certified_kubeconfig(admin: Path, ca_dir: Path, user: str, group: str, path: Path) -> Path:
    """A kubeconfig for `user` in `group` on `admin`'s cluster, by a client certificate."""
    name = user.replace(":", "-")
    client_certificate(ca_dir, name, organization=group, common_name=user)
    credentials = {"client-certificate": str(ca_dir / f"{name}.crt"),
                   "client-key": str(ca_dir / f"{name}.key")}  # fmt: skip
    return kubeconfig_as(admin, name, credentials, path)
