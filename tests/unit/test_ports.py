"""Ports for restartable local processes stay out of the range outgoing connections use."""

from __future__ import annotations

import socket

from tide.ports import ephemeral_range, free_port


def test_free_ports_lie_outside_the_ephemeral_range_and_can_be_bound() -> None:
    low, high = ephemeral_range()
    base = free_port(3)
    assert base >= 10000
    assert base + 2 < low or base > high
    for port in range(base, base + 3):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("0.0.0.0", port))
