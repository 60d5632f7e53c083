"""The sync runner against a real broker and database: once-only effects, retries, DLQ, lag."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import unique
from tests.runtime_fixtures import RunningGroup
from tide.errors import PermanentError, TransientError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.kafka import failures
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup, RetryPolicy
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(120)


def effects(database: str, consumer: str) -> Counter[str]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT event_id FROM test_effects WHERE consumer = %s", (consumer,))
        return Counter(row[0] for row in rows)


def recording(
    fail: Callable[[CloudEvent, int], None] | None = None,
) -> tuple[Handler, Counter[str]]:
    """A handler that records its effect in the handler's transaction; `fail` may raise first."""
    attempts: Counter[str] = Counter()
    lock = threading.Lock()

    def handle(event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
        with lock:
            attempts[event.id] += 1
            attempt = attempts[event.id]
        if fail is not None:
            fail(event, attempt)
        ctx.db.execute(
            "INSERT INTO test_effects (consumer, event_id) VALUES (%s, %s)",
            (ctx.consumer, event.id),
        )
        return ()

    return handle, attempts


def rating(user: str, stars: int = 4) -> CloudEvent:
    return CloudEvent(
        type="video.rated",
        source="/test",
        data={"user_id": user, "video_id": "v1", "rating": stars},
    )


def fast_retries(catalog: Catalog) -> ConsumerGroup:
    """The badges group, renamed, retrying after 1 s and 2 s so tests stay short."""
    base = catalog.group(
        next(g.name for g in catalog.consumer_groups if g.name.startswith("badges"))
    )
    return base.model_copy(update={"name": unique("g"), "retry": RetryPolicy(delays_s=(1, 2))})


def dlq_records(brokers: Brokers, topic: str, count: int) -> list[dict[str, str]]:
    reader = Consumer(
        {
            "bootstrap.servers": brokers.kafka_bootstrap,
            "group.id": unique("dlq-reader"),
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([topic])
    found: list[dict[str, str]] = []
    try:

        def arrived() -> bool:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                headers = {k: v.decode() for k, v in message.headers() or [] if v is not None}
                headers["value"] = (message.value() or b"").decode(errors="replace")
                found.append(headers)
            return len(found) >= count

        wait_until(arrived, timeout=60, what=f"{count} records on {topic}", interval=0)
    finally:
        reader.close()
    return found


def lag_drained(brokers: Brokers, group: ConsumerGroup, topic: str, partitions: int) -> bool:
    probe = Consumer({"bootstrap.servers": brokers.kafka_bootstrap, "group.id": group.name})
    try:
        committed = probe.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        for tp in committed:
            _low, high = probe.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        probe.close()


def test_every_event_has_exactly_one_effect_and_offsets_are_committed(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    group = fast_retries(catalog)
    handler, _ = recording()
    run_group(group, handler)
    events = [rating(f"user-{i}") for i in range(60)]
    for event in events:
        publisher.publish(event)
    wait_until(
        lambda: set(effects(database, group.name)) == {e.id for e in events},
        timeout=60,
        what="an effect for every event",
    )
    assert max(effects(database, group.name).values()) == 1
    topic = catalog.event("video.rated").topic
    wait_until(lambda: lag_drained(brokers, group, topic, 6), timeout=30, what="lag to drain")


def test_transient_failures_retry_later_while_other_partitions_keep_flowing(
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    flaky = rating("flaky-user")

    def fail_twice(event: CloudEvent, attempt: int) -> None:
        if event.id == flaky.id and attempt <= 2:
            raise TransientError(f"dependency down (attempt {attempt})")

    group = fast_retries(catalog)
    handler, attempts = recording(fail_twice)
    run_group(group, handler)
    publisher.publish(flaky)
    others = [rating(f"steady-{i}") for i in range(30)]
    for event in others:
        publisher.publish(event)

    wait_until(
        lambda: flaky.id in effects(database, group.name),
        timeout=60,
        what="the retried event's effect",
    )
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT event_id, at FROM test_effects WHERE consumer = %s", (group.name,)
        ).fetchall()
    at = dict(rows)
    assert set(at) == {flaky.id, *(e.id for e in others)}
    # The failing record did not hold anyone up: everything else was done first.
    assert max(at[e.id] for e in others) < at[flaky.id]
    # Two failures, then the success: three attempts, and one effect.
    assert attempts[flaky.id] == 3
    assert effects(database, group.name)[flaky.id] == 1


def test_poison_record_goes_to_the_dlq_with_its_origin_and_the_group_keeps_up(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    group = fast_retries(catalog)
    topic = catalog.event("video.rated").topic
    raw = Producer({"bootstrap.servers": brokers.kafka_bootstrap})
    raw.produce(topic, key=b"poison", value=b"\xff this is not json", partition=2)
    assert raw.flush(10) == 0
    handler, _attempts = recording()
    run_group(group, handler)
    events = [rating(f"after-{i}") for i in range(20)]
    for event in events:
        publisher.publish(event)

    (dead,) = dlq_records(brokers, group.dlq_topic, 1)
    assert dead["value"].endswith("this is not json")
    assert dead[failures.ORIGINAL_TOPIC] == topic
    assert dead[failures.ORIGINAL_PARTITION] == "2"
    assert dead[failures.ORIGINAL_OFFSET] == "0"
    assert dead[failures.ATTEMPT] == "1"
    assert dead[failures.DEAD_LETTER_REASON] == "undecodable"
    assert dead[failures.ERROR_TYPE] == "UndecodableRecordError"
    assert "not JSON" in dead[failures.ERROR_MESSAGE]
    wait_until(
        lambda: set(effects(database, group.name)) == {e.id for e in events},
        timeout=60,
        what="every valid event after the poison",
    )
    wait_until(lambda: lag_drained(brokers, group, topic, 6), timeout=30, what="lag to drain")


def test_permanent_error_skips_retries_and_exhausted_retries_end_in_the_dlq(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    refused, hopeless = rating("refused", 1), rating("hopeless", 2)

    def fail(event: CloudEvent, attempt: int) -> None:
        if event.id == refused.id:
            raise PermanentError("one-star ratings of v1 are not allowed")
        if event.id == hopeless.id:
            raise TransientError(f"still down at attempt {attempt}")

    group = fast_retries(catalog)
    handler, attempts = recording(fail)
    run_group(group, handler)
    publisher.publish(refused)
    publisher.publish(hopeless)

    dead = {d[failures.ERROR_MESSAGE]: d for d in dlq_records(brokers, group.dlq_topic, 2)}
    permanent = dead["one-star ratings of v1 are not allowed"]
    assert permanent[failures.DEAD_LETTER_REASON] == "permanent"
    assert permanent[failures.ATTEMPT] == "1"
    exhausted = dead["still down at attempt 3"]
    assert exhausted[failures.DEAD_LETTER_REASON] == "exhausted"
    assert exhausted[failures.ATTEMPT] == str(group.retry.max_attempts) == "3"
    assert exhausted[failures.ORIGINAL_TOPIC] == catalog.event("video.rated").topic
    assert attempts[refused.id] == 1
    assert attempts[hopeless.id] == 3
    assert effects(database, group.name) == Counter()
