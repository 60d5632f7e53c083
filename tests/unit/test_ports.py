"""Ports for restartable local processes stay out of the range outgoing connections use."""

from __future__ import annotations

import socket

import pytest

from tide_dev import ports
from tide_dev.ports import ephemeral_range, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_bound() -> None:
    low, high = ephemeral_range()
    base = free_port(3)
    assert base >= 10000
    assert base + 2 < low or base > high
    for port in range(base, base + 3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("0.0.0.0", port))


def test_servers_started_side_by_side_never_get_the_same_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Twenty ports to choose from and twenty servers that have not bound theirs yet:
    # by chance alone two of them would almost surely share one.
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (30020, 65535))
    monkeypatch.setattr(ports, "_LOWEST", 30000)
    monkeypatch.setattr(ports, "_handed", set())
    # Every port binds: what is tested is the memory of handed-out ports, not this host.
    monkeypatch.setattr(ports, "is_free", lambda _port: True)
    picked = [free_port() for _ in range(20)]
    assert sorted(picked) == list(range(30000, 30020))
