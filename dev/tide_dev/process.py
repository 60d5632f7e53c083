"""Child processes with a log file, free ports, and the users Debian servers run as."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tide.waiting import wait_until
from tide_dev.errors import HarnessError

# Debian package that provides each executable the harness runs.
PACKAGE_OF = {
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    "initdb": "postgresql",
    "pg_ctl": "postgresql",
    "rabbitmq-server": "rabbitmq-server",
    "rabbitmqctl": "rabbitmq-server",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "go": "golang-go",
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker": "docker.io",
    "iptables": "iptables",
}


def require(executable: str, *, search: Sequence[str] = ()) -> str:
    """The absolute path of an executable, or a HarnessError naming the package to install."""
    found = shutil.which(executable)
    for directory in search:
        if found:
            break
        candidate = Path(directory) / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    if found is None:
        package = PACKAGE_OF.get(executable, executable)
        raise HarnessError(
            executable,
            reason="not installed",
            fix=f"sudo apt-get install -y {package}   (or run: bash .ci/run, which installs it)",
        )
    return found


def run_as(system_user: str) -> str | None:
    """The user to run a Debian-packaged server as: its own system user when we are root.

    PostgreSQL refuses to run as root and RabbitMQ's Erlang VM cannot write
    root-owned directories, so as root we run them as the users their packages made.
    """
    return system_user if os.geteuid() == 0 else None


def owned_dir(path: Path, user: str | None) -> Path:
    """Create `path` (and parents) and hand it to `user`, so a server run as `user` can write it."""
    path.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def owned_file(path: Path, text: str, user: str | None) -> Path:
    """Write `text` to `path` and hand the file to `user`."""
    path.write_text(text)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def answers_ok(url: str) -> bool:
    """Whether a plain-HTTP health endpoint on loopback answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def ensure_free(port: int, what: str) -> None:
    """Refuse to start a broker on a port that another process already holds."""
    if port_is_open(port):
        raise HarnessError(
            what,
            reason=f"port {port} on 127.0.0.1 is already in use",
            fix=f"stop whatever listens there (ss -ltnp 'sport = :{port}') or unset the port",
        )


# The reaper runs from source with the system Python: a server run as its own user
# (postgres, rabbitmq) can read neither the work tree nor a venv under /root.
_REAPER = (Path(__file__).parent / "reaper.py").read_text()


def reaped(argv: Sequence[str]) -> list[str]:
    """`argv` under dev/tide_dev/reaper.py: killed with its group if this process dies."""
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    return [python, "-c", _REAPER, str(os.getpid()), *argv]


class ManagedProcess:
    """One broker process: started with its output in a log file, stopped for sure."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # The reaper ignores SIGTERM so that only the command drains on it; until it has
        # said so, the signal stays blocked (a blocked mask survives fork and exec).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            self._spawn()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _spawn(self) -> None:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                reaped(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                # Own process group: a stop reaches the JVM or Erlang children too.
                start_new_session=True,
            )

    def start_serving(
        self,
        ready: Callable[[], bool],
        *,
        server: str,
        what: str,
        timeout: float,
        fix: str,
        log: Path | None = None,
        interval: float = 0.2,
    ) -> None:
        """Start, then wait until `ready()`. If the process exits first or the deadline
        passes, kill it and raise a HarnessError naming `server`, the `fix`, and the log:
        the server's own `log` if it wrote one by then, else this process's output."""
        self.start()
        try:
            wait_until(ready, timeout=timeout, what=what, interval=interval, alive=self.exit_reason)
        except (TimeoutError, RuntimeError) as exc:
            self.kill()
            shown = log if log is not None and log.exists() else self.log
            raise HarnessError(server, reason=str(exc), fix=fix, log=shown) from exc

    def exit_reason(self) -> str | None:
        """None while running; otherwise how the process ended."""
        if self._proc is None:
            return f"{self.name} was never started"
        code = self._proc.poll()
        if code is None:
            return None
        return f"{self.name} exited with code {code}"

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the whole process group (chaos tests use SIGSTOP/SIGCONT/SIGKILL)."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP the command and its children, not the reaper that leads their group: a
        stopped reaper could not kill the group if this test process died before `thaw`,
        and the stopped server would outlive the session."""
        if self._proc is not None and self._proc.poll() is None:
            for pid in _group_members(self._proc.pid):
                if pid != self._proc.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps the process."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            proc.wait(timeout=10)
        # The command may end before the rest of its group: RabbitMQ's start script
        # exits while the Erlang VM still shuts down. A stop is over when they are gone.
        if not _wait_group_gone(proc.pid, timeout):
            _killpg(proc.pid, signal.SIGKILL)
            _wait_group_gone(proc.pid, 10)
        # Children that left the group (epmd, for one) are the broker's business.

    def kill(self) -> None:
        """SIGKILL the group and reap it: the crash, not the shutdown."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _wait_group_gone(proc.pid, 10)


def _group_members(pgid: int) -> list[int]:
    """Live processes (zombies aside: nothing may reap them here) in process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone while we looked
        # After the command's name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    try:
        wait_until(
            lambda: not _group_members(pgid), timeout=timeout, what=f"process group {pgid} gone"
        )
    except TimeoutError:
        return False
    return True


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
