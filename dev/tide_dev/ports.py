"""Free TCP ports for local processes that are stopped and started again on the same port.

A port the kernel hands out for binding port 0 lies in its ephemeral range, the same
range it picks the local port of every outgoing connection from. While a server on such
a port is down, a client's connection can take that port as its own local end (a
reconnecting client can even connect to itself), and the restarted server then fails
with "address in use". A CI run lost a restarted consumer that way. Ports outside the
ephemeral range are never handed to outgoing connections.

A port is free only until its server binds it, and servers started side by side pick
theirs before any of them binds: this process never hands out the same port twice.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LINUX_DEFAULT = (32768, 60999)
_LOWEST = 10000  # below this live well-known services a developer may run
_ATTEMPTS = 200

# Ports handed out by this process, never handed out again; pickers run in threads.
_handed: set[int] = set()
_handed_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return _LINUX_DEFAULT
    return low, high


def is_free(port: int) -> bool:
    """Whether a server could bind `port` now (the wildcard address, no SO_REUSEADDR:
    the strictest bind a service makes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive free ports, outside the ephemeral range when it can be."""
    low, high = ephemeral_range()
    spans = [(lo, hi) for lo, hi in ((_LOWEST, low - 1), (high + 1, 65535)) if hi - lo >= count]
    with _handed_lock:
        for _ in range(_ATTEMPTS if spans else 0):
            lo, hi = random.choice(spans)  # noqa: S311 - spreading ports, not a secret
            base = random.randint(lo, hi - count + 1)  # noqa: S311
            ports = range(base, base + count)
            if _handed.isdisjoint(ports) and all(is_free(port) for port in ports):
                _handed.update(ports)
                return base
        if count == 1:
            # No room outside the ephemeral range on this host: the kernel's pick is the
            # best left.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            _handed.add(port)
            return port
    raise OSError(f"no {count} consecutive free ports outside {low}-{high}")
