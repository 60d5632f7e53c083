"""Every address range the harness gives its clusters, in one place.

Simulated and real nodes, pods, Services and load balancers get RFC 5737 documentation
ranges, which no real network should route, except where a machine's own network
already uses one: this CI machine sits on 192.0.2.0/24 (gateway 192.0.2.1), so nothing
here takes an address from it. What a KWOK node reports for its kubelet is loopback
(KWOK's own server): the API server dials it for `exec` and `logs`.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

# RFC 5737: TEST-NET-1, -2 and -3.
DOCUMENTATION = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)

# The API server's Service range, and the address a played load balancer gives out.
SERVICES = "203.0.113.0/25"
LOAD_BALANCER_IP = "203.0.113.200"
# The `kubernetes` Service takes the range's first address; cluster DNS (kube-dns, as
# kubeadm names it) a fixed one the kubelet hands every pod.
API_SERVICE_IP = "203.0.113.1"
DNS_SERVICE_IP = "203.0.113.10"
CLUSTER_DOMAIN = "cluster.local"
# The real node's link to the host (host end, node end) and its pods' bridge.
NODE_LINK = "203.0.113.248/30"
NODE_LINK_HOST = "203.0.113.249"
NODE_LINK_NODE = "203.0.113.250"
NODE_PODS = "203.0.113.128/26"
# KWOK's simulated pods (nothing dials them), and its nodes' kubelet address.
KWOK_PODS = "198.51.100.0/24"
KWOK_NODE_IP = "127.0.0.1"

RANGES = {"services": SERVICES, "node link": NODE_LINK, "node pods": NODE_PODS,
          "KWOK pods": KWOK_PODS}  # fmt: skip


def host_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The IPv4 networks of this machine's own interfaces (docker0 and the like included)."""
    shown = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    return [
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in json.loads(shown.stdout)
        for a in link.get("addr_info", [])
        if not ipaddress.ip_address(a["local"]).is_loopback
    ]
