"""`make local` (python -m tide_dev.local) as a user runs it: live, then Ctrl-C leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

from ott.catalog import CATALOG
from tests.conftest import unique
from tests.integration.local_run import make_local
from tide.rabbitmq.definitions import definitions
from tide.waiting import wait_until
from tide_dev import Brokers, BrokerSession


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone while we looked
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_make_local_goes_live_and_ctrl_c_stops_everything_it_started(
    brokers: Brokers, broker_session: BrokerSession
) -> None:
    # On the session's brokers (as with `make brokers` in another terminal), under a
    # private catalog so the other tests' topics and groups are not its business.
    suffix = unique("local")
    assert broker_session.rabbitmq is not None
    broker_session.rabbitmq.import_definitions(definitions(CATALOG.isolated(suffix)))
    env = {
        **os.environ,
        **brokers.as_env(),
        "TIDE_CATALOG_SUFFIX": suffix,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "120",
    }
    with make_local("--interval", "1s", "--rate", "10", env=env) as local:
        local.wait_live()
        started = _descendants(local.process.pid)
        # Every service, both exporters, Prometheus (and the reapers watching them).
        assert len(started) >= len(CATALOG.services) + 2, started
        code = local.interrupt()
    output = local.output
    assert code == 0, output[-3000:]
    assert "stopped: every process make local started has exited" in output, output[-3000:]
    # The view's last frame, printed as it stops: the groups, the API, the alerts.
    for part in ("Kafka consumer groups", "in DLQ", "answers/s", "Alerts (pending and firing)"):
        assert part in output, output[-3000:]
    wait_until(
        lambda: not any(_running(pid) for pid in started),
        timeout=60,
        what="every process make local started gone",
    )
