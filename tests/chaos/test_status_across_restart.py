"""Reading group backlogs while Kafka restarts: the reader waits out the restart, never crashes.

`tide status` and every drain check read committed offsets. Right after a broker restart
the group coordinator answers NOT_COORDINATOR; librdkafka's admin client handled that by
dereferencing a consumer group it does not have, and the process died with SIGSEGV (issue
#15.2: the test process itself, leaving its brokers behind). The reader runs in a child
process here, so such a crash is its exit status, not the end of the test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.kafka import KafkaBroker

pytestmark = pytest.mark.timeout(240)

RECORDS = 7

# Polls backlogs() as fast as it can until the stop file appears; one JSON line per answer.
READER = """
import json, pathlib, sys, time
from confluent_kafka import KafkaException
from ott.catalog import CATALOG
from tide.status import backlogs
bootstrap, suffix, out, stop = sys.argv[1:5]
groups = CATALOG.isolated(suffix).consumer_groups
with open(out, "a", buffering=1) as lines:
    while not pathlib.Path(stop).exists():
        try:
            found = backlogs({"bootstrap.servers": bootstrap}, groups, timeout=5)
        except KafkaException as exc:  # the broker is down: a clear error, then try again
            lines.write(json.dumps({"at": time.time(), "error": str(exc)}) + "\\n")
            continue
        lines.write(json.dumps({"at": time.time(), "backlogs": found}) + "\\n")
"""


def _answers(out: Path) -> list[dict[str, object]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]


def test_backlogs_are_read_across_a_broker_restart_without_a_crash(
    brokers: Brokers, catalog: Catalog, own_kafka: KafkaBroker, tmp_path: Path
) -> None:
    analytics = catalog.group(
        next(g.name for g in catalog.consumer_groups if "analytics" in g.name)
    )
    producer = Producer({"bootstrap.servers": brokers.kafka_bootstrap})
    for n in range(RECORDS):
        producer.produce(analytics.topics[0], key=str(n).encode(), value=b"{}")
    assert producer.flush(30) == 0
    suffix = analytics.name.removeprefix("analytics-")
    out, stop = tmp_path / "answers.jsonl", tmp_path / "stop"
    with (tmp_path / "reader.log").open("wb") as log:  # the child keeps its own descriptor
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, brokers.kafka_bootstrap, suffix, str(out), str(stop)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(
            lambda: any("backlogs" in a for a in _answers(out)),
            timeout=60,
            what="a first answer",
            alive=lambda: _exited(reader),
        )
        own_kafka.restart()
        restarted = _answers(out)[-1]["at"]
        # An answer after the restart with the real backlog: every group's coordinator moved.
        wait_until(
            lambda: any("backlogs" in a and a["at"] > restarted for a in _answers(out)),
            timeout=90,
            what="an answer after the restart",
            alive=lambda: _exited(reader),
        )
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert reader.returncode == 0, (
        f"the backlog reader died with {reader.returncode} across the restart: "
        + (tmp_path / "reader.log").read_text(errors="replace")[-1500:]
    )
    last = [a for a in _answers(out) if "backlogs" in a][-1]["backlogs"]
    assert isinstance(last, dict)
    assert last[analytics.name] == RECORDS, last


def _exited(process: subprocess.Popen[bytes]) -> str | None:
    code = process.poll()
    return None if code is None else f"the backlog reader exited with {code}"
