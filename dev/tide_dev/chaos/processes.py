"""The platform as local processes (`tide run <service>`), to be killed, frozen and restarted."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tide.waiting import wait_until
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port
from tide_dev.services import start_service


@dataclass
class ServiceProcess:
    service: str
    port: int
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_reason(self) -> str | None:
        if self.popen.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-1500:]
        return f"{self.service} (pid {self.pid}) exited {self.popen.returncode}:\n{tail}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def drained_cleanly(self) -> bool:
        # Every runner exits 0 only once it has finished what it had in hand (tide.launch).
        return self.popen.returncode == 0


class LocalPlatform:
    """Starts services as child processes with the given TIDE_* environment, plus a
    service's own from `env_of` (its database role, say); stops them all."""

    def __init__(
        self,
        env: Mapping[str, str],
        workdir: Path,
        env_of: Mapping[str, Mapping[str, str]] | None = None,
        issuer: LocalIssuer | None = None,
    ) -> None:
        """With `issuer`, the APIs accept only its tokens (tide.auth), as on a cluster;
        `credentials()` is what a client of theirs sends."""
        self.issuer = issuer
        self.env = {**env, **(issuer.settings() if issuer is not None else {})}
        self.env_of = {service: dict(own) for service, own in (env_of or {}).items()}
        self.workdir = workdir
        self.processes: list[ServiceProcess] = []
        self.retired: list[ServiceProcess] = []

    def start(self, service: str, *, timeout: float = 90) -> ServiceProcess:
        port = free_port()
        replica = sum(1 for p in [*self.processes, *self.retired] if p.service == service)
        log = self.workdir / f"{service}-{replica}.log"
        popen = start_service(service, port, {**self.env, **self.env_of.get(service, {})}, log=log)
        process = ServiceProcess(service, port, log, popen)
        self.processes.append(process)
        wait_until(
            process.ready,
            timeout=timeout,
            what=f"{service} ready on :{port}",
            alive=process.exit_reason,
        )
        return process

    def credentials(self, subject: str = "tide-load") -> dict[str, str]:
        """Headers that every API here takes: a token with every scope, or none needed."""
        if self.issuer is None:
            return {}
        return self.issuer.headers(subject)

    def of(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.processes if p.service == service]

    def kill(self, service: str) -> int:
        """SIGKILL every process of `service`; returns how many died."""
        victims = self.of(service)
        for process in victims:
            process.popen.send_signal(signal.SIGKILL)
        for process in victims:
            process.popen.wait(timeout=30)
            self.processes.remove(process)
            self.retired.append(process)
        return len(victims)

    def stop(self) -> list[str]:
        """SIGTERM everything; returns what did not drain cleanly (an empty list is good)."""
        for process in self.processes:
            process.popen.send_signal(signal.SIGCONT)  # a frozen one could not act on SIGTERM
            process.popen.send_signal(signal.SIGTERM)
        problems = []
        for process in self.processes:
            try:
                process.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
                problems.append(f"{process.service} (pid {process.pid}) ignored SIGTERM for 60 s")
                continue
            if not process.drained_cleanly():
                problems.append(f"{process.service} did not drain: {process.exit_reason()}")
        self.retired.extend(self.processes)
        self.processes = []
        return problems

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()
