"""Cluster DNS for a real node: CoreDNS as the kube-dns Deployment and Service, as kubeadm
and kind install it.

No image can be pulled here, so the image is CoreDNS's own binary, built by `make
control-plane` from the Go module proxy with only the plugins this Corefile names, packed
alone into an archive the node imports. The objects follow kubeadm's: ServiceAccount
`coredns`, ClusterRole `system:coredns` (the reads its kubernetes plugin makes), ConfigMap
`coredns`, Deployment `coredns` labelled `k8s-app: kube-dns`, Service `kube-dns` at the
address every pod's resolv.conf names. There is no `forward`: a name outside the cluster
does not resolve, so nothing leaves the node by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client, utils

from tests.harness.addresses import CLUSTER_DOMAIN, DNS_SERVICE_IP
from tests.harness.controlplane import binary
from tests.harness.diagnostics import describe_pods
from tests.harness.images import archive
from tide.waiting import wait_until

COREDNS_VERSION = "v1.12.2"
IMAGE = f"tide.local/coredns:{COREDNS_VERSION}"
NAMESPACE = "kube-system"
LABELS = {"k8s-app": "kube-dns"}

COREFILE = f""".:53 {{
    errors
    health {{
        lameduck 5s
    }}
    ready
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
}}
"""


def coredns_image(workdir: Path) -> Path:
    """The CoreDNS image, as a `docker save` archive."""
    program = Path(binary("coredns")).read_bytes()
    return archive(IMAGE, {"coredns": (program, 0o755)}, ["/coredns"], workdir / "coredns.tar")


def manifests(node: str) -> list[dict[str, Any]]:
    """kube-dns on the real node `node` (KWOK's nodes run no container)."""
    meta = {"namespace": NAMESPACE, "labels": LABELS}
    probe = {"periodSeconds": 2, "timeoutSeconds": 2}
    container = {
        "name": "coredns",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
        # The ports the health and ready plugins serve.
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, **probe},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, **probe},
    }  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": NAMESPACE},
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": LABELS},
                  "template": {"metadata": {"labels": LABELS}, "spec": {
                      "serviceAccountName": "coredns",
                      "dnsPolicy": "Default",
                      "nodeSelector": {"kubernetes.io/hostname": node},
                      "containers": [container],
                      "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", **meta},
         "spec": {"clusterIP": DNS_SERVICE_IP, "selector": LABELS,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]  # fmt: skip


def deploy(api: client.ApiClient, node: str, timeout: float = 120.0) -> None:
    """kube-dns applied, and waited for until CoreDNS is ready behind its Service."""
    for document in manifests(node):
        utils.create_from_dict(api, document)  # type: ignore[no-untyped-call]
    apps = client.AppsV1Api(api)

    def available() -> bool:
        status = apps.read_namespaced_deployment_status("coredns", NAMESPACE).status
        return bool(status and status.available_replicas)

    try:
        wait_until(available, timeout=timeout, interval=1, what="CoreDNS ready on the real node")
    except TimeoutError as exc:
        pods = describe_pods(client.CoreV1Api(api), NAMESPACE, "k8s-app=kube-dns")
        raise TimeoutError(f"{exc}\n{pods}") from exc
