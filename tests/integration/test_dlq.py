"""Dead letters against a real broker: inspect them, fix the handler, redrive, each effect once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.harness import Brokers
from tests.harness.waiting import wait_until
from tests.integration.test_consumer_runner import effects, fast_retries, rating, recording
from tests.runtime_fixtures import RunningGroup
from tide.dlq import DeadLetterQueue
from tide.errors import PermanentError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler
from tide.kafka import dead_letters as dl
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup

pytestmark = pytest.mark.timeout(180)


def test_fix_then_redrive_empties_the_dlq_and_every_effect_exists_once(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    broken = threading.Event()
    broken.set()

    def bug(event: CloudEvent, _attempt: int) -> None:
        if broken.is_set() and event.data["rating"] == 1:
            raise PermanentError("one-star ratings crash the ranking model")

    group = fast_retries(catalog)
    handler, _attempts = recording(bug)
    run_group(group, handler)
    bad = [rating(f"grumpy-{i}", 1) for i in range(6)]
    good = [rating(f"happy-{i}", 5) for i in range(6)]
    for event in bad + good:
        publisher.publish(event)
    dlq = DeadLetterQueue({"bootstrap.servers": brokers.kafka_bootstrap}, group)
    wait_until(lambda: dlq.depth() == 6, timeout=60, what="6 dead letters")
    wait_until(
        lambda: set(effects(database, group.name)) == {e.id for e in good},
        timeout=60,
        what="good ones",
    )

    shown = dlq.show(limit=10)
    assert len(shown) == 6
    assert {d.event_type for d in shown} == {"video.rated"}
    assert {d.reason for d in shown} == {"permanent"}
    assert {d.error for d in shown} == {"one-star ratings crash the ranking model"}
    assert dlq.redrive(dry_run=True).redriven == 6
    assert dlq.depth() == 6, "a dry run changes nothing"

    broken.clear()  # the fix is deployed
    # Interrupted after three records, then run again: nothing lost, nothing twice.
    first = dlq.redrive(limit=3)
    assert first.redriven == 3
    assert dlq.depth() == 3
    second = dlq.redrive()
    assert second.redriven == 3
    assert set(second.destinations) == {group.retry_topics[0]}
    assert dlq.depth() == 0
    wanted = {e.id for e in bad + good}
    wait_until(
        lambda: set(effects(database, group.name)) == wanted, timeout=60, what="redriven effects"
    )
    assert set(effects(database, group.name).values()) == {1}


def test_redriven_records_carry_a_redrive_count_and_keep_their_origin(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    effects_table: str,
) -> None:
    def always(event: CloudEvent, _attempt: int) -> None:
        raise PermanentError("still broken")

    group = fast_retries(catalog)
    handler, _ = recording(always)
    run_group(group, handler)
    publisher.publish(rating("stubborn", 2))
    dlq = DeadLetterQueue({"bootstrap.servers": brokers.kafka_bootstrap}, group)
    wait_until(lambda: dlq.depth() == 1, timeout=60, what="a dead letter")
    assert dlq.redrive().redriven == 1
    wait_until(lambda: dlq.depth() == 1, timeout=60, what="the record dead again")
    (again,) = dlq.show()
    assert again.headers[dl.REDRIVE_COUNT] == "1"
    assert again.headers[dl.ORIGINAL_TOPIC] == catalog.event("video.rated").topic
    assert again.headers[dl.ATTEMPT] == "1"
