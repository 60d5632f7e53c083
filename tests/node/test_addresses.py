"""The ranges the harness configures stay inside documentation ranges, apart from each
other and from this machine's own networks: no test traffic can leave for a real host."""

from __future__ import annotations

import ipaddress
from itertools import combinations

from tests.harness import addresses


def test_every_configured_range_is_a_documentation_range_of_its_own() -> None:
    ranges = {name: ipaddress.ip_network(cidr) for name, cidr in addresses.RANGES.items()}
    for name, network in ranges.items():
        assert any(network.subnet_of(doc) for doc in addresses.DOCUMENTATION), name
    for (a, first), (b, second) in combinations(ranges.items(), 2):
        assert not first.overlaps(second), f"{a} {first} overlaps {b} {second}"
    balancer = ipaddress.ip_address(addresses.LOAD_BALANCER_IP)
    assert not any(balancer in network for network in ranges.values())
    # The `kubernetes` Service takes the range's first address; DNS must not collide with it.
    services = ranges["services"]
    assert ipaddress.ip_address(addresses.API_SERVICE_IP) == next(services.hosts())
    assert ipaddress.ip_address(addresses.DNS_SERVICE_IP) in services
    assert addresses.DNS_SERVICE_IP != addresses.API_SERVICE_IP
    link = ranges["node link"]
    assert ipaddress.ip_address(addresses.NODE_LINK_HOST) in link
    assert ipaddress.ip_address(addresses.NODE_LINK_NODE) in link
    assert ipaddress.ip_address(addresses.KWOK_NODE_IP).is_loopback


def test_no_configured_range_is_one_of_this_machines_networks() -> None:
    # A running node's link is the harness's own, not the machine's.
    link = ipaddress.ip_network(addresses.NODE_LINK)
    own = [n for n in addresses.host_networks() if n != link]
    for name, cidr in addresses.RANGES.items():
        network = ipaddress.ip_network(cidr)
        clashes = [str(n) for n in own if n.overlaps(network)]
        assert not clashes, f"{name} {network} is this machine's own network {clashes}"
