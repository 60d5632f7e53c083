"""`tide-dev run`: every catalog service as a child process, kept running.

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
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tide_dev.services import service_command, start_service

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
    held: bool = False  # stopped on purpose (`hold`): not restarted until `release`


class Supervisor:
    """Starts, watches and restarts the children; `run` returns the exit code.

    `ports` gives each child its HTTP port (consecutive from an int). `env` is added to this
    process's environment for the children, then `env_of[service]` for a service's own
    (its database role, say); with `log_dir`, each child writes its output to
    `<service>-<n>.log` there instead of this process's stdout.
    """

    def __init__(
        self,
        services: Sequence[str],
        ports: int | Sequence[int],
        *,
        env: Mapping[str, str] | None = None,
        env_of: Mapping[str, Mapping[str, str]] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        if isinstance(ports, int):
            ports = [ports + i for i in range(len(services))]
        self.children = [Child(s, port) for s, port in zip(services, ports, strict=True)]
        self.env = dict(env or {})
        self.env_of = {service: dict(own) for service, own in (env_of or {}).items()}
        self.log_dir = log_dir
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stop.set()

    def command(self, child: Child) -> list[str]:
        return service_command(child.service)

    def _spawn(self, child: Child) -> None:
        log_file = None
        if self.log_dir is not None:
            replica = sum(
                1 for c in self.children[: self.children.index(child)] if c.service == child.service
            )
            log_file = self.log_dir / f"{child.service}-{replica}.log"
        # Each child in its own session: a terminal's Ctrl-C reaches the supervisor alone,
        # which drains the children itself. Had they the signal too, they would drain and
        # exit 0 before it stopped watching, and it would start them again.
        child.process = start_service(
            child.service,
            child.port,
            {**self.env, **self.env_of.get(child.service, {})},
            log=log_file,
            own_session=True,
            command=self.command(child),
        )
        child.starts += 1
        child.started_at = time.monotonic()
        child.restart_at = None
        log.info("started %s on :%d (pid %d)", child.service, child.port, child.process.pid)

    def _check(self, child: Child, now: float) -> int | None:
        """Reap a dead child and schedule its restart; an exit code that ends everything."""
        if child.process is None:
            if child.held:
                return None
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

    def hold(self, service: str) -> int:
        """Stop every child of `service` (SIGTERM: each drains) and keep them down, as
        `kubectl scale --replicas=0` would. Returns how many were stopped."""
        with self._lock:
            children = [c for c in self.children if c.service == service]
            for child in children:
                child.held = True
            stopping = [c.process for c in children if c.process is not None]
        _drained(stopping)
        with self._lock:
            for child in children:
                child.process = None
        log.info("holding %s down (%d stopped)", service, len(stopping))
        return len(stopping)

    def release(self, service: str) -> None:
        """Start the held children of `service` again."""
        with self._lock:
            for child in self.children:
                if child.service == service and child.held:
                    child.held = False
                    child.backoff_s = FIRST_BACKOFF_S
                    self._spawn(child)

    def run(self, poll_s: float = 0.2) -> int:
        with self._lock:
            for child in self.children:
                self._spawn(child)
        code = 0
        # The supervisor's own loop: it watches processes, it does not wait on a test.
        while not self._stop.wait(poll_s):
            now = time.monotonic()
            with self._lock:
                ending = [
                    c
                    for child in self.children
                    if not child.held and (c := self._check(child, now)) is not None
                ]
            if ending:
                code = ending[0]
                break
        self._drain()
        return code

    def _drain(self) -> None:
        _drained([c.process for c in self.children if c.process is not None])


def _drained(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each (they drain at once, in parallel); SIGKILL one that outlasts the limit."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=DRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
