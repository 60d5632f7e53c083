"""The processor's batches on real PostgreSQL: one transaction per batch, and a failure that
ends its batch without costing the records around it their exactly-once effects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from tests.conftest import unique
from tide.codecs.json_schema import EventCodec
from tide.errors import TransientError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.kafka.failures import ATTEMPT, DeadLetterReason
from tide.kafka.processing import Record, RecordProcessor
from tide.kafka.producer import EventPublisher, PublishError
from tide.store.processed import count_processed
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def rating(user: str) -> CloudEvent:
    return CloudEvent(
        type="video.rated", source="/test", data={"user_id": user, "video_id": "v1", "rating": 4}
    )


def records(codec: EventCodec, *events: CloudEvent) -> list[Record]:
    """The records a consumer would fetch for these events (one partition, in order)."""
    found = []
    for offset, event in enumerate(events):
        encoded = codec.encode(event)
        found.append(Record(encoded.topic, 0, offset, encoded.key, encoded.value, encoded.headers))
    return found


class Effects:
    """A handler that writes one row per event in the handler's transaction, counts its
    calls, and fails for the users it is told to."""

    def __init__(self, database: str, table: str, failing: frozenset[str] = frozenset()) -> None:
        self.database = database
        self.table = table
        self.failing = failing
        self.calls: Counter[str] = Counter()

    def __call__(self, event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
        user = str(event.data["user_id"])
        self.calls[user] += 1
        if user in self.failing:
            raise TransientError(f"{user} is failing")
        ctx.db.execute(f"INSERT INTO {self.table} (user_id) VALUES (%s)", (user,))  # noqa: S608
        return ()

    def rows(self) -> Counter[str]:
        with psycopg.connect(self.database) as conn:
            found = conn.execute(f"SELECT user_id FROM {self.table}")  # noqa: S608
            return Counter(row[0] for row in found)


@pytest.fixture
def table(database: str) -> Iterator[str]:
    """A private effects table; its unique key is checked at commit, as a deferred
    constraint, so a handler can make a whole batch's commit fail."""
    name = unique("effects").replace("-", "_")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {name} (user_id text NOT NULL,"
            " UNIQUE (user_id) DEFERRABLE INITIALLY DEFERRED)"
        )
    yield name
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


@pytest.fixture
def group(catalog: Catalog) -> ConsumerGroup:
    rated = next(g for g in catalog.consumer_groups if g.name.startswith("badges"))
    return rated.model_copy(update={"name": unique("g")})


Processors = Callable[..., RecordProcessor]


@pytest.fixture
def processor(
    catalog: Catalog, database: str, publisher: EventPublisher, group: ConsumerGroup
) -> Iterator[Processors]:
    """Factory: a processor for `group` running `handler` (on `dsn`, else the harness's
    database; emitting to `sink`, else the test's publisher); each is closed after the test."""
    made: list[RecordProcessor] = []

    def make(
        handler: Handler, dsn: str = database, sink: EventPublisher = publisher
    ) -> RecordProcessor:
        made.append(
            RecordProcessor(
                group=group,
                handler=handler,
                codec=EventCodec(catalog),
                database=dsn,
                publisher=sink,
                source="/test",
            )
        )
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_batch_is_handled_once_and_a_repeated_event_in_it_is_a_duplicate(
    catalog: Catalog, database: str, processor: Processors, table: str
) -> None:
    handler = Effects(database, table)
    a, b = rating("a"), rating("b")
    batch = records(EventCodec(catalog), a, b, a)
    runner = processor(handler)
    outcomes = runner.process_batch(batch)
    again = runner.process_batch(batch[:1])
    assert [(o.done, o.duplicate) for o in outcomes] == [(True, False), (True, False), (True, True)]
    assert again[0].duplicate, "a redelivered event must not run its handler again"
    assert handler.rows() == Counter({"a": 1, "b": 1})
    assert handler.calls == Counter({"a": 1, "b": 1})


def test_a_failing_record_ends_its_batch_runs_once_and_the_ones_before_it_commit_once(
    catalog: Catalog, database: str, processor: Processors, group: ConsumerGroup, table: str
) -> None:
    handler = Effects(database, table, failing=frozenset({"b"}))
    batch = records(EventCodec(catalog), rating("a"), rating("b"), rating("c"))
    runner = processor(handler)
    first = runner.process_batch(batch)
    rest = runner.process_batch(batch[len(first) :])
    assert first[0].done
    assert first[1].route is not None
    assert first[1].route.topic == group.retry_topics[0]
    assert first[1].route.headers[ATTEMPT] == "1"
    assert len(first) == 2, "the batch must end at the failed record"
    assert [o.done for o in rest] == [True]
    assert handler.rows() == Counter({"a": 1, "c": 1}), "a's rolled-back run left no second row"
    assert handler.calls["b"] == 1, "a failing handler runs once per delivery"


def test_an_undecodable_record_ends_its_batch_and_goes_to_the_dlq(
    catalog: Catalog, database: str, processor: Processors, table: str
) -> None:
    handler = Effects(database, table)
    good = records(EventCodec(catalog), rating("a"), rating("b"))
    poison = Record(good[0].topic, 0, 1, b"k", b"{not json", [])
    batch = [good[0], poison, good[1]]
    runner = processor(handler)
    first = runner.process_batch(batch)
    rest = runner.process_batch(batch[len(first) :])
    assert len(first) == 2
    assert first[0].done
    assert first[1].route is not None
    assert first[1].route.reason is DeadLetterReason.UNDECODABLE
    assert [o.done for o in rest] == [True]
    assert handler.rows() == Counter({"a": 1, "b": 1})


def test_a_batch_whose_commit_fails_is_taken_one_record_at_a_time(
    catalog: Catalog, database: str, processor: Processors, table: str
) -> None:
    """Two events whose effects clash only at commit (a deferred unique key): the batch
    cannot say which record is at fault, so it finds out one record at a time."""
    handler = Effects(database, table)
    clash = [rating("same"), rating("same")]  # two events (two ids), one key
    batch = records(EventCodec(catalog), *clash)
    runner = processor(handler)
    first = runner.process_batch(batch)
    second = runner.process_batch(batch[len(first) :])
    assert [o.done for o in first] == [True], "the first record alone commits"
    assert len(second) == 1
    assert second[0].route is not None
    assert second[0].route.headers["tide-error-type"] == "UniqueViolation"
    assert handler.rows() == Counter({"same": 1})


def test_postgres_down_leaves_the_first_record_in_place(
    catalog: Catalog, processor: Processors, table: str, database: str
) -> None:
    closed = psycopg.conninfo.make_conninfo(database, port=1, connect_timeout=2)
    handler = Effects(database, table)
    runner = processor(handler, closed)
    outcomes = runner.process_batch(records(EventCodec(catalog), rating("a"), rating("b")))
    assert len(outcomes) == 1
    assert isinstance(outcomes[0].unavailable, psycopg.OperationalError)
    assert handler.calls == Counter()


class Recommends(Effects):
    """Effects, and each event causes a recommendation for its user."""

    def __call__(self, event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
        super().__call__(event, ctx)
        data = {"user_id": event.data["user_id"], "video_ids": ["v2"], "reason": "batch"}
        return (event.caused("recommendation.generated", ctx.source, data),)


def test_what_a_batch_caused_is_in_kafka_once_the_batch_is_done(
    catalog: Catalog,
    processor: Processors,
    table: str,
    database: str,
    consumer: Callable[..., Consumer],
) -> None:
    """The caused events are sent once the batch's handlers have run, and acknowledged
    together before the commit: each is in Kafka, and each record's effect committed once."""
    users = [f"u{n}" for n in range(20)]
    events = [rating(user) for user in users]
    outcomes = processor(Recommends(database, table)).process_batch(
        records(EventCodec(catalog), *events)
    )
    assert [o.done for o in outcomes] == [True] * len(users)
    assert Recommends(database, table).rows() == Counter(users)
    expected = {e.caused("recommendation.generated", "/test", {}).id for e in events}
    reader = consumer(unique("read"))
    reader.subscribe([str(catalog.event("recommendation.generated").topic)])
    found: set[str] = set()

    def all_there() -> bool:
        for message in reader.consume(100, timeout=0.5):
            found.add(Record.of(message).text_headers()["ce_id"])
        return expected <= found

    wait_until(all_there, timeout=30, what="every caused recommendation in Kafka")


def test_when_kafka_does_not_acknowledge_what_a_batch_caused_nothing_of_it_commits(
    catalog: Catalog,
    processor: Processors,
    group: ConsumerGroup,
    table: str,
    database: str,
    silent_broker: str,
) -> None:
    """No ack before the commit means no commit: the first record waits in place, and its
    effects and marks are rolled back, so a later delivery handles the batch again."""
    nowhere = EventPublisher({"bootstrap.servers": silent_broker}, EventCodec(catalog), timeout_s=2)
    handler = Recommends(database, table)
    try:
        outcomes = processor(handler, sink=nowhere).process_batch(
            records(EventCodec(catalog), rating("a"), rating("b"))
        )
    finally:
        nowhere.close()
    assert len(outcomes) == 1
    assert isinstance(outcomes[0].unavailable, PublishError), outcomes
    assert "Message timed out" in str(outcomes[0].unavailable)
    assert handler.calls == Counter({"a": 1, "b": 1})
    assert handler.rows() == Counter(), "effects committed without their caused events"
    with psycopg.connect(database) as conn:
        assert count_processed(conn, group.name) == 0


def test_a_record_that_fails_leaves_what_the_records_before_it_caused_in_kafka_once(
    catalog: Catalog,
    processor: Processors,
    table: str,
    database: str,
    consumer: Callable[..., Consumer],
) -> None:
    """b fails: its batch rolls back and a is handled again. What a caused is sent only by
    the transaction that commits, so it is in Kafka once, not once per attempt."""
    events = [rating("a"), rating("b"), rating("c")]
    runner = processor(Recommends(database, table, failing=frozenset({"b"})))
    batch = records(EventCodec(catalog), *events)
    first = runner.process_batch(batch)
    rest = runner.process_batch(batch[len(first) :])
    assert [o.done for o in first] == [True, False]
    assert [o.done for o in rest] == [True]
    topic = str(catalog.event("recommendation.generated").topic)
    sent = Counter(_ids_to_the_end(consumer(unique("read")), topic))
    once = {events[n].caused("recommendation.generated", "/test", {}).id: 1 for n in (0, 2)}
    assert sent == once


def _ids_to_the_end(reader: Consumer, topic: str) -> list[str]:
    """Every record's event id on `topic`, read up to its end as it is now (what was
    acknowledged before the call is there)."""
    metadata = reader.list_topics(topic, timeout=10).topics[topic]
    ends: dict[int, int] = {}

    def known_ends() -> bool:
        # A new topic's leaders may not be known yet: NOT_LEADER_FOR_PARTITION, then they are.
        try:
            for p in metadata.partitions:
                ends[p] = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
        except KafkaException:
            return False
        return True

    wait_until(known_ends, timeout=30, what=f"{topic}'s end offsets")
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    positions = dict.fromkeys(ends, 0)
    ids: list[str] = []

    def read_all() -> bool:
        for message in reader.consume(100, timeout=0.5):
            assert message.error() is None, message.error()
            ids.append(Record.of(message).text_headers()["ce_id"])
            positions[message.partition()] = message.offset() + 1
        return all(positions[p] >= end for p, end in ends.items())

    wait_until(read_all, timeout=30, what=f"{topic} read to its end")
    return ids
