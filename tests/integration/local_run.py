"""`make local` (python -m tide_dev.local) run as a user runs it in a terminal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tide.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
LIVE_TIMEOUT_S = 240
STOP_TIMEOUT_S = 120


@dataclass(frozen=True)
class LocalRun:
    process: subprocess.Popen[str]
    lines: list[str]  # what it printed so far, stdout and stderr

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_live(self) -> str:
        """Its line saying it is live (the API, the credentials, Prometheus, the logs)."""
        found: list[str] = []

        def live() -> bool:
            found[:] = [line for line in self.lines if line.startswith("live after")]
            return bool(found)

        def running() -> str | None:
            return None if self.process.poll() is None else self.output[-3000:]

        wait_until(live, timeout=LIVE_TIMEOUT_S, what="make local going live", alive=running)
        return found[0]

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it to its foreground job; the exit status."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGUSR1)  # its threads' stacks (faulthandler)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            pytest.fail(
                f"make local still running {STOP_TIMEOUT_S} s after Ctrl-C:\n" + self.output[-8000:]
            )


@contextlib.contextmanager
def make_local(*args: str, env: dict[str, str]) -> Iterator[LocalRun]:
    """`make local` with `args`, from Tide's directory, in a process group of its own (a
    terminal's foreground job); killed, with everything it started, if still running
    when the block ends."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "tide_dev.local", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
        reader.start()
        try:
            yield LocalRun(process, lines)
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            reader.join(timeout=30)
