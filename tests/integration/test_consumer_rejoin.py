"""A member that lost its group while Kafka answers gets a new client and the group goes on
(issue #15.1). After a Kafka restart, librdkafka 2.16 can leave a member outside its group
for good (0 members, the backlog growing). That state cannot be forced from outside, so
this test moves the runner's last-joined time back past wedge.OUT_FOR_S and keeps it there
(as the stuck client's statistics would), with a short grace for Kafka's answers; what it
checks is the recovery: a new client joins and every record still has exactly one effect."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from tests.integration.test_consumer_runner import effects, fast_retries, rating, recording
from tests.runtime_fixtures import producer_replacements, running_runner
from tide.codecs.json_schema import EventCodec
from tide.errors import TransientError
from tide.events.envelope import CloudEvent
from tide.kafka import wedge
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(180)


def test_a_member_out_of_its_group_gets_a_new_client_and_nothing_is_lost(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    publisher: EventPublisher,
    effects_table: str,
    quick_wedge: None,
) -> None:
    client = {"bootstrap.servers": brokers.kafka_bootstrap}
    group = fast_retries(catalog)
    handler, _ = recording()
    with running_runner(
        catalog,
        group,
        handler,
        codec=EventCodec(catalog),
        database=database,
        publisher=publisher,
        client=client,
    ) as runner:
        before = [rating(f"before-{i}") for i in range(10)]
        for event in before:
            publisher.publish(event)
        wait_until(
            lambda: set(effects(database, group.name)) >= {e.id for e in before},
            timeout=60,
            what="the first records handled",
        )
        # As librdkafka's statistics would show a member stuck outside its group.
        joined = runner._on_stats
        runner._on_stats = lambda raw: None  # type: ignore[method-assign]
        runner._joined_at = time.monotonic() - wedge.OUT_FOR_S
        wait_until(
            lambda: (
                (
                    REGISTRY.get_sample_value("tide_consumer_rejoins_total", {"group": group.name})
                    or 0
                )
                >= 1
            ),
            timeout=30,
            what="a new consumer client",
        )
        runner._on_stats = joined  # type: ignore[method-assign]
        after = [rating(f"after-{i}") for i in range(10)]
        for event in after:
            publisher.publish(event)
        wanted = {e.id for e in before + after}
        wait_until(
            lambda: set(effects(database, group.name)) >= wanted,
            timeout=90,
            what="every record handled by the new client",
        )
    assert set(effects(database, group.name).values()) == {1}, "a record had two effects"


def test_a_retry_producer_out_of_service_while_kafka_answers_is_replaced(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    publisher: EventPublisher,
    effects_table: str,
    quick_wedge: None,
) -> None:
    # The runner's own producer (retry and DLQ copies) meets the same librdkafka wedge;
    # marked as failing since long ago, it is replaced and the next retry goes through.
    group = fast_retries(catalog)

    def fail_first(event: CloudEvent, attempt: int) -> None:
        if attempt == 1:
            raise TransientError("the first attempt fails, so the record takes a retry topic")

    handler, attempts = recording(fail_first)
    client = {"bootstrap.servers": brokers.kafka_bootstrap}
    before = producer_replacements()
    with running_runner(
        catalog,
        group,
        handler,
        codec=EventCodec(catalog),
        database=database,
        publisher=publisher,
        client=client,
    ) as runner:
        wedged = runner._router
        runner._routing_failing_since = time.monotonic() - wedge.OUT_FOR_S
        wait_until(
            lambda: producer_replacements() > before,
            timeout=30,
            what="a new retry producer",
        )
        assert runner._router is not wedged
        event = rating("retried-after-replacement")
        publisher.publish(event)
        wait_until(
            lambda: effects(database, group.name)[event.id] == 1,
            timeout=60,
            what="the record handled on its retry",
        )
    assert attempts[event.id] == 2
