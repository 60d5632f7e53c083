"""`tide run --all`: every catalog service as a child process, kept running.

A child that dies is logged with how it ended and started again after a backoff
(1 s, doubling to 30 s, reset once it has stayed up for a minute), as Kubernetes
restarts a container. A child whose first start exits 3 has a configuration that
can never work: restarting it would only repeat the error, so everything stops
and the supervisor exits 3 with that line. A restarted child that exits 3 ran
before with the same configuration, so what failed is passing (its port taken
while it was down): it is restarted like any other death. SIGTERM or Ctrl-C
drains every child.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

EXIT_CONFIG = 3
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0
DRAIN_TIMEOUT_S = 60.0


def describe_exit(code: int) -> str:
    """`exit status 1` or `killed by SIGKILL`: how a child ended, from its return code."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@dataclass
class Child:
    """One supervised service: its process now, and when it may be started again."""

    service: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    starts: int = 0


class Supervisor:
    """Starts, watches and restarts the children; `run` returns the exit code."""

    def __init__(self, services: Sequence[str], base_port: int) -> None:
        self.children = [Child(s, base_port + i) for i, s in enumerate(services)]
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def command(self, child: Child) -> list[str]:
        return [sys.executable, "-m", "tide", "run", child.service]

    def _spawn(self, child: Child) -> None:
        env = {
            **os.environ,
            "TIDE_SERVICE": child.service,
            "TIDE_HTTP_PORT": str(child.port),
            "TIDE_PARENT_PID": str(os.getpid()),
        }
        child.process = subprocess.Popen(self.command(child), env=env)
        child.starts += 1
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s on :%d (pid %d)", child.service, child.port, child.process.pid)

    def _check(self, child: Child, now: float) -> int | None:
        """Reap a dead child and schedule its restart; an exit code that ends everything."""
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
            return None
        code = child.process.poll()
        if code is None:
            return None
        pid = child.process.pid
        child.process = None
        if code == EXIT_CONFIG and child.starts == 1:
            log.error(
                "%s (pid %d) cannot start: exit status 3; stopping everything", child.service, pid
            )
            return EXIT_CONFIG
        if now - child.started_at >= STABLE_AFTER_S:
            child.backoff_s = FIRST_BACKOFF_S
        child.restart_at = now + child.backoff_s
        log.error(
            "%s (pid %d) died: %s; restarting in %.0f s",
            child.service,
            pid,
            describe_exit(code),
            child.backoff_s,
        )
        child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
        return None

    def run(self, poll_s: float = 0.2) -> int:
        for child in self.children:
            self._spawn(child)
        code = 0
        # The supervisor's own loop: it watches processes, it does not wait on a test.
        while not self._stop.wait(poll_s):
            now = time.monotonic()
            ending = [c for child in self.children if (c := self._check(child, now)) is not None]
            if ending:
                code = ending[0]
                break
        self._drain()
        return code

    def _drain(self) -> None:
        running = [c.process for c in self.children if c.process is not None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=DRAIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
