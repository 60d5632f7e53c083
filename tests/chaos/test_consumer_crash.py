"""SIGKILL a consumer in the middle of its backlog: after a restart every event counts once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import unique
from tests.harness import Brokers
from tests.harness.process import free_port
from tests.harness.waiting import wait_until
from tests.runtime_fixtures import create_topics
from tide.catalog import CATALOG
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher

pytestmark = pytest.mark.timeout(240)
USERS, PER_USER = 20, 60


def _processed(database: str, group: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_events WHERE consumer = %s", (group,)
        ).fetchone()
    return int(row[0]) if row else 0


def _start(brokers: Brokers, suffix: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **brokers.as_env(),
        "TIDE_CATALOG_SUFFIX": suffix,
        "TIDE_HTTP_PORT": str(free_port()),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tide", "run", "personalization"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigkill_mid_backlog_then_restart_counts_every_event_exactly_once(
    brokers: Brokers, database: str, tmp_path: Path
) -> None:
    suffix = unique("c")
    catalog = CATALOG.isolated(suffix)
    create_topics(brokers.kafka_bootstrap, list(catalog.all_topics()))
    group = next(g.name for g in catalog.consumer_groups if g.name.startswith("personalization"))
    users = [f"{suffix}-user-{i}" for i in range(USERS)]
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    try:
        pending = [
            publisher.send(
                CloudEvent(
                    type="video.watch.completed",
                    source="/video-service",
                    data={
                        "user_id": user,
                        "video_id": f"v{n}",
                        "session_id": f"s{n}",
                        "watched_s": 10,
                        "finished": True,
                    },
                )
            )
            for n in range(PER_USER)
            for user in users
        ]
        for delivery in pending:
            delivery.result(timeout=30)
    finally:
        assert publisher.close() == 0
    total = USERS * PER_USER

    first = _start(brokers, suffix, tmp_path / "personalization.log")
    wait_until(lambda: _processed(database, group) >= total // 10, timeout=90, what="10% processed")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    at_kill = _processed(database, group)
    print(f"\nchaos: SIGKILL personalization after {at_kill}/{total} events")  # the report
    assert at_kill < total, "the consumer finished before it could be killed; raise PER_USER"

    second = _start(brokers, suffix, tmp_path / "personalization.log")
    try:
        wait_until(
            lambda: _processed(database, group) == total, timeout=120, what="every event processed"
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT user_id, watched, watched_s FROM viewer_profiles WHERE user_id = ANY(%s)",
            (users,),
        ).fetchall()
    assert len(rows) == USERS
    # Redelivered records after the kill had no second effect: counts are exact.
    assert {watched for _user, watched, _seconds in rows} == {PER_USER}
    assert {seconds for _user, _watched, seconds in rows} == {PER_USER * 10.0}
    print(f"chaos: verdict ok, {total} events, {USERS} profiles exact after the restart")
