"""No local service outlives what started it (#15.2): a `tide run` child of the chaos platform
(or of `tide-dev run`) drains and exits once its parent is gone, however the parent ended."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tide.waiting import wait_until
from tide_dev import Brokers

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for init to reap it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_a_service_whose_parent_was_sigkilled_drains_and_exits(
    brokers: Brokers, tmp_path: Path
) -> None:
    # A stand-in for a test run or `tide-dev chaos`: starts a service, then hangs.
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tide_dev.chaos.processes import LocalPlatform
        platform = LocalPlatform({brokers.as_env()!r}, Path({str(tmp_path)!r}))
        service = platform.start("video-service")
        print(service.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    assert not _gone(child), "the service did not start"
    parent.kill()  # no cleanup code runs: a segfault, CI's timeout
    parent.wait(timeout=10)
    wait_until(lambda: _gone(child), timeout=30, what="the orphaned service gone")
    log = (tmp_path / "video-service-0.log").read_text(errors="replace")
    assert f"parent process {parent.pid} is gone: draining" in log, log[-1500:]
    assert "video-service stopped cleanly" in log, log[-1500:]
