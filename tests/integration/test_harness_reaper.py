"""Nothing the harness starts outlives the test process, however that process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tide.waiting import wait_until
from tide_dev.process import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("frozen", [False, True], ids=["running", "frozen"])
def test_a_test_process_killed_by_sigkill_takes_its_servers_with_it(
    tmp_path: Path, frozen: bool
) -> None:
    # A stand-in for pytest: starts a long-running "server" the harness way, then hangs;
    # frozen, as a chaos test leaves Kafka between its freeze and thaw.
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from tide_dev.process import ManagedProcess
        server = ManagedProcess("server", ["sleep", "600"], log=Path({str(tmp_path / "s.log")!r}))
        server.start()
        if {frozen}:
            server.freeze()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    tester = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert tester.stdout is not None
    with tester.stdout:
        group = int(tester.stdout.readline())
    assert not _group_gone(group), "the server did not start"
    tester.kill()  # as a segfault or CI's timeout would end it: no cleanup code runs
    tester.wait(timeout=10)
    wait_until(lambda: _group_gone(group), timeout=15, what="the orphaned server killed")


def test_a_graceful_stop_still_reaches_the_server_and_reports_its_exit(tmp_path: Path) -> None:
    trap = "trap 'exit 0' TERM; echo serving; while true; do sleep 0.1; done"
    log = tmp_path / "s.log"
    server = ManagedProcess("server", ["bash", "-c", trap], log=log)
    server.start()
    wait_until(lambda: "serving" in log.read_text(), timeout=10, what="the server serving")
    server.stop(timeout=20)
    assert server.exit_reason() == "server exited with code 0"
    killed = ManagedProcess("server", ["sleep", "600"], log=tmp_path / "k.log")
    killed.start()
    killed.signal(signal.SIGKILL)
    wait_until(lambda: killed.exit_reason() is not None, timeout=10, what="killed")
    assert killed.pid is not None
    assert _group_gone(killed.pid)
