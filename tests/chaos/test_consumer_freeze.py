"""SIGSTOP one of two consumers past its session timeout, then SIGCONT: the group rebalances,
the other member takes over, and every event still counts exactly once."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from tests.chaos.test_consumer_crash import _processed, _start
from tests.conftest import unique
from tests.harness import Brokers
from tests.harness.waiting import wait_until
from tests.runtime_fixtures import create_topics
from tide.catalog import CATALOG
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher

pytestmark = pytest.mark.timeout(240)
USERS, PER_USER = 12, 100


def test_frozen_consumer_is_rebalanced_away_and_nothing_counts_twice(
    brokers: Brokers, database: str, tmp_path: Path
) -> None:
    suffix = unique("f")
    catalog = CATALOG.isolated(suffix)
    create_topics(brokers.kafka_bootstrap, list(catalog.all_topics()))
    group = next(g.name for g in catalog.consumer_groups if g.name.startswith("personalization"))
    users = [f"{suffix}-user-{i}" for i in range(USERS)]
    total = USERS * PER_USER

    first = _start(brokers, suffix, tmp_path / "a.log")
    second = _start(brokers, suffix, tmp_path / "b.log")
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    try:
        for delivery in [
            publisher.send(
                CloudEvent(
                    type="video.watch.completed",
                    source="/video-service",
                    data={
                        "user_id": u,
                        "video_id": f"v{n}",
                        "session_id": f"s{n}",
                        "watched_s": 10,
                        "finished": True,
                    },
                )
            )
            for n in range(PER_USER)
            for u in users
        ]:
            delivery.result(timeout=30)
    finally:
        assert publisher.close() == 0
    try:
        wait_until(
            lambda: _processed(database, group) >= total // 10, timeout=90, what="10% processed"
        )
        first.send_signal(signal.SIGSTOP)
        frozen_at = _processed(database, group)
        # Past the 10 s session timeout the group drops the frozen member and the other
        # one takes its partitions: progress continues without it.
        wait_until(
            lambda: _processed(database, group) == total,
            timeout=120,
            what="the rest, by the other member",
        )
        first.send_signal(signal.SIGCONT)
        print(f"\nchaos: froze one of two consumers at {frozen_at}/{total}; the other finished")
    finally:
        for child in (first, second):
            child.send_signal(signal.SIGCONT)
            child.send_signal(signal.SIGTERM)
        for child in (first, second):
            child.wait(timeout=60)
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT watched FROM viewer_profiles WHERE user_id = ANY(%s)", (users,)
        ).fetchall()
    assert sorted(r[0] for r in rows) == [PER_USER] * USERS
    print("chaos: verdict ok, every profile exact after the rebalance")
