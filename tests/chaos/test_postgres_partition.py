"""Partition PostgreSQL away from a running consumer group (packets dropped, nothing refused):
the group notices within its timeouts, records wait in place, a stop is honoured during the
partition, and after it heals every event has exactly one effect (issue #15.6)."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest
from prometheus_client import REGISTRY

from tests.harness.partition import PartitionableLink
from tests.integration.test_consumer_runner import effects, fast_retries, rating, recording
from tests.runtime_fixtures import running_runner
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(300)


def _waits(group: str) -> float:
    return REGISTRY.get_sample_value("tide_platform_waits_total", {"group": group}) or 0.0


def test_a_partition_from_postgres_is_waited_out_and_does_not_block_a_stop(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    publisher: EventPublisher,
    effects_table: str,
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database)
    group = fast_retries(catalog)
    handler, _ = recording()
    client = {"bootstrap.servers": brokers.kafka_bootstrap}
    with PartitionableLink((str(info["host"]), int(str(info["port"])))) as link:
        linked = psycopg.conninfo.make_conninfo(database, host="127.0.0.1", port=link.port)
        with running_runner(
            catalog,
            group,
            handler,
            codec=EventCodec(catalog),
            database=linked,
            publisher=publisher,
            client=client,
        ) as runner:
            before = [rating(f"before-{i}") for i in range(10)]
            for event in before:
                publisher.publish(event)
            wait_until(
                lambda: set(effects(database, group.name)) >= {e.id for e in before},
                timeout=60,
                what="the first records handled through the link",
            )

            # The runner's connection is open and idle: its next query meets silence.
            link.cut()
            during = [rating(f"during-{i}") for i in range(10)]
            for event in during:
                publisher.publish(event)  # Kafka is not partitioned: it takes them
            wait_until(
                lambda: _waits(group.name) >= 1,
                timeout=60,
                what="the group to give up on the silent connection and wait in place",
            )
            assert not set(effects(database, group.name)) & {e.id for e in during}
            link.heal()
            wanted = {e.id for e in before + during}
            wait_until(
                lambda: set(effects(database, group.name)) >= wanted,
                timeout=120,
                what="every record handled once the partition healed",
            )

            # Partitioned again, with records in hand: SIGTERM's stop must not wait on TCP.
            link.cut()
            after = [rating(f"after-{i}") for i in range(5)]
            for event in after:
                publisher.publish(event)
            waits = _waits(group.name)
            wait_until(
                lambda: _waits(group.name) > waits,
                timeout=60,
                what="the group waiting on the partition again",
            )
            started = time.monotonic()
            runner.stop()  # leaving the block joins the runner's thread
        stopped_after = time.monotonic() - started
    assert stopped_after < 30, f"the runner took {stopped_after:.0f} s to stop"
    assert Counter(effects(database, group.name)) == Counter(dict.fromkeys(wanted, 1))
