"""A catalog service as a child process of this one: `tide run <service>`, as its pod runs it.

`tide-dev run`'s supervisor and the chaos platform both start services this way, so a
service run either way gets the same environment: the caller's TIDE_* settings, its
name and HTTP port, and TIDE_PARENT_PID, with which the child drains and exits once
this process is gone (however it ended), so no service outlives what started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def service_command(service: str) -> list[str]:
    return [sys.executable, "-m", "tide", "run", service]


def start_service(
    service: str,
    port: int,
    env: Mapping[str, str],
    *,
    log: Path | None = None,
    own_session: bool = False,
    command: Sequence[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `service` on `port`. Its output is appended to `log`, else goes to ours;
    `own_session` keeps a terminal's Ctrl-C from reaching it; `command` replaces
    `tide run <service>` (tests script a child's exits with it)."""
    argv = list(command) if command is not None else service_command(service)
    environment = {
        **os.environ,
        **env,
        "TIDE_SERVICE": service,
        "TIDE_HTTP_PORT": str(port),
        "TIDE_PARENT_PID": str(os.getpid()),
    }
    if log is None:
        return subprocess.Popen(argv, env=environment, start_new_session=own_session)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=own_session,
        )
