"""A network partition between clients and a server: a TCP relay whose packets iptables drops.

A stopped server refuses a connection at once. A partitioned one is silence: packets go
unanswered and a client without timeouts waits for TCP's own limit, about 15 minutes.
Clients reach the server through the relay's port; `cut` drops every packet to and from
that port (on loopback both directions pass INPUT), `heal` lets them through again. The
server itself, and every other client of it, is untouched.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from types import TracebackType

from tide_dev.ports import free_port
from tide_dev.process import require


class PartitionableLink:
    """127.0.0.1:`port` relays to `target`; `cut` and `heal` partition it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._iptables = require("iptables")
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._cut = False
        self._closed = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def _rules(self, action: str) -> None:
        for match in ("--dport", "--sport"):
            subprocess.run(
                [self._iptables, action, "INPUT", "-p", "tcp", match, str(self.port), "-j", "DROP"],
                check=True,
                capture_output=True,
                timeout=30,
            )

    def cut(self) -> None:
        if not self._cut:
            self._rules("-I")
            self._cut = True

    def heal(self) -> None:
        if self._cut:
            self._rules("-D")
            self._cut = False

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._closed.is_set():  # accepted just as the link closed
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self.heal()
        with self._lock:
            self._closed.set()
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for sock in sockets:
            sock.close()

    def __enter__(self) -> PartitionableLink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
