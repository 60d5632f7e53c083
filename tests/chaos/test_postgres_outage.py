"""Stop PostgreSQL under a running consumer group: records wait in place, none reaches the DLQ,
and after PostgreSQL is back every event has exactly one effect."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import psycopg
import pytest

from tests.integration.test_consumer_runner import (
    effects,
    fast_retries,
    rating,
    recording,
)
from tests.runtime_fixtures import RunningGroup
from tide.handlers import Handler
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev import BrokerSession, HarnessError

pytestmark = pytest.mark.timeout(240)


def test_a_database_outage_delays_records_without_losing_or_dead_lettering_them(
    broker_session: BrokerSession,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    postgres = broker_session.postgres
    if postgres is None:
        raise HarnessError(
            "PostgreSQL",
            reason="needs the harness's server to stop it",
            fix="unset TIDE_POSTGRES_DSN",
        )
    group = fast_retries(catalog)
    handler, _attempts = recording()
    run_group(group, handler)
    before = [rating(f"before-{i}") for i in range(10)]
    for event in before:
        publisher.publish(event)
    wait_until(
        lambda: set(effects(database, group.name)) == {e.id for e in before},
        timeout=60,
        what="first batch",
    )

    postgres.stop()
    during = [rating(f"during-{i}") for i in range(10)]
    for event in during:
        publisher.publish(event)  # Kafka still accepts; the consumer must wait, not give up
    postgres.start()
    print("\nchaos: PostgreSQL stopped and started with 10 events arriving meanwhile")

    wanted = {e.id for e in before + during}
    wait_until(
        lambda: set(effects(database, group.name)) == wanted, timeout=120, what="every effect"
    )
    assert set(effects(database, group.name).values()) == {1}
    with psycopg.connect(database) as conn:
        dead = conn.execute(
            "SELECT count(*) FROM processed_events WHERE consumer = %s", (group.name,)
        ).fetchone()
    assert dead == (20,)
    assert Counter(effects(database, group.name)) == Counter(dict.fromkeys(wanted, 1))
