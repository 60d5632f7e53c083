"""`tide-dev run` keeps every service running: a killed child is logged and started again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ott.catalog import CATALOG
from tests.conftest import unique
from tests.runtime_fixtures import create_topics
from tide.rabbitmq.definitions import definitions
from tide.waiting import wait_until
from tide_dev import Brokers, BrokerSession
from tide_dev.ports import free_port


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _pids(log: Path, service: str) -> list[int]:
    return [
        int(p) for p in re.findall(rf"started {service} on :\d+ \(pid (\d+)\)", log.read_text())
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_killed_by_sigkill_is_logged_and_restarted(
    brokers: Brokers, database: str, broker_session: BrokerSession, tmp_path: Path
) -> None:
    suffix = unique("sup")
    isolated = CATALOG.isolated(suffix)
    create_topics(brokers.kafka_bootstrap, list(isolated.all_topics()))
    assert broker_session.rabbitmq is not None
    broker_session.rabbitmq.import_definitions(definitions(isolated))
    base = free_port(len(CATALOG.services))
    names = [s.name for s in CATALOG.services]
    port = base + names.index("badges")
    log = tmp_path / "run-all.log"
    env = {**os.environ, **brokers.as_env(), "TIDE_CATALOG_SUFFIX": suffix}
    env["TIDE_HTTP_PORT"] = str(base)
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "tide_dev.cli", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        alive = lambda: None if supervisor.poll() is None else f"exited {supervisor.returncode}"  # noqa: E731
        wait_until(lambda: _ready(port), timeout=120, what="badges ready", alive=alive)
        (first,) = _pids(log, "badges")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(_pids(log, "badges")) == 2, timeout=30, what="badges restarted")
        assert f"badges (pid {first}) died: killed by SIGKILL; restarting in 1 s" in log.read_text()
        wait_until(lambda: _ready(port), timeout=120, what="badges ready again", alive=alive)
        every = [pid for name in names for pid in _pids(log, name)]
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]
    assert not [pid for pid in every if _alive(pid)], "children outlived the supervisor"
