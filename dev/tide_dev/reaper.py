"""Runs one harness process and kills it when the test process that started it is gone.

`python -m tide_dev.reaper <parent pid> <argv...>`: the command runs as
this process's child, in the process group this process leads (ManagedProcess
starts it in a new session), so group signals (SIGKILL, SIGCONT) reach both;
a freeze (SIGSTOP) spares this process, which must stay awake to do its job.
SIGTERM and SIGINT are the command's to act on; this process exits with its code.
If the parent dies without stopping it (SIGKILL, a segfault, CI's timeout),
the whole group is killed within a second: no broker outlives its session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

POLL_S = 0.5


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []

    def relay(signum: int, _frame: object) -> None:
        # A group signal reaches the command by itself; one that came before the command
        # existed is handed on as soon as it does. This process only waits for its exit.
        if child is None:
            early.append(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    # The starter blocked both until now, so none could end this process before the lines
    # above; handlers (unlike ignored signals) are reset for the command by exec.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    child = subprocess.Popen(command)
    for signum in early:
        child.send_signal(signum)
    while True:
        try:
            return _exit_code(child.wait(timeout=POLL_S))
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent:
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _exit_code(code: int) -> int:
    """A command killed by signal N ends this process as the shell reports it: 128 + N."""
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
