"""Which exits of a `tide-dev run` child stop everything, and which are restarted."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from tide.waiting import wait_until
from tide_dev.supervisor import EXIT_CONFIG, Child, Supervisor

# Each start appends a line to the file, then exits with the code at that line of
# `codes` (one past the end: runs until terminated).
SCRIPT = """
import signal, sys, time
from pathlib import Path
starts, codes = Path(sys.argv[1]), [int(c) for c in sys.argv[2].split(",") if c]
n = len(starts.read_text().splitlines()) if starts.exists() else 0
starts.write_text(starts.read_text() + "x\\n" if starts.exists() else "x\\n")
if n < len(codes):
    sys.exit(codes[n])
signal.sigwait({signal.SIGTERM})
"""


class ScriptedSupervisor(Supervisor):
    def __init__(self, starts: Path, codes: list[int]) -> None:
        super().__init__(["badges"], 1)
        self._args = [str(starts), ",".join(map(str, codes))]

    def command(self, child: Child) -> list[str]:
        return [sys.executable, "-c", SCRIPT, *self._args]


def _run(supervisor: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run(poll_s=0.05)))
    thread.start()
    return thread, result


def test_a_config_error_on_first_start_stops_everything(tmp_path: Path) -> None:
    supervisor = ScriptedSupervisor(tmp_path / "starts", [EXIT_CONFIG])
    thread, result = _run(supervisor)
    thread.join(timeout=30)
    assert result == [EXIT_CONFIG]


def test_exit_3_after_a_restart_is_restarted_like_any_death(tmp_path: Path) -> None:
    # The restarted child found its port taken: passing, so it is started once more.
    starts = tmp_path / "starts"
    supervisor = ScriptedSupervisor(starts, [1, EXIT_CONFIG])
    thread, result = _run(supervisor)
    try:
        wait_until(
            lambda: starts.exists() and len(starts.read_text().splitlines()) == 3,
            timeout=30,
            what="the third start",
            alive=lambda: None if thread.is_alive() else f"supervisor returned {result}",
        )
    finally:
        supervisor.stop()
        thread.join(timeout=30)
    assert result == [0]


def test_a_held_service_stays_down_until_released(tmp_path: Path) -> None:
    # `make local` and the alert tests stop a consumer group this way, as a scale to zero.
    starts = tmp_path / "starts"
    supervisor = ScriptedSupervisor(starts, [])
    thread, result = _run(supervisor)

    def started(n: int) -> bool:
        return starts.exists() and len(starts.read_text().splitlines()) == n

    try:
        wait_until(lambda: started(1), timeout=30, what="the first start")
        assert supervisor.hold("badges") == 1
        (child,) = supervisor.children
        assert child.process is None
        assert child.held
        supervisor.release("badges")
        wait_until(lambda: started(2), timeout=30, what="the start after release")
        assert child.process is not None
        assert child.process.poll() is None
    finally:
        supervisor.stop()
        thread.join(timeout=30)
    assert result == [0]
