"""Consume: Tide's consumer runner against bare client loops that do the same work, and against
FastStream's subscribers, all on the same topic of the same Tide-encoded records.

Each run is a fresh consumer group reading the records from the start, timed from its first
record to its last (not the group join). The runner is measured as every service runs
it (decode, schema check, a no-op handler inside the exactly-once transaction that marks
the event processed in PostgreSQL, offset store), and with that transaction taken out.

A bare loop does what the runner must do, minus Tide (bench/same_work.py): parse each
record's headers and JSON, run the codec's compiled schema check, commit once per batch.
The runner with its mark is set against a bare loop that writes the same marks, the runner
without against one that does not. A loop that only polls and counts, and Kafka's Java
ConsumerPerformance, are printed for reference.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import psycopg
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench import peers, reference
from bench.clock import Clock
from bench.measure import Mode, Path, Rounds, Row, interleaved
from bench.payloads import RECOMMENDATION, recommendation
from bench.same_work import checked, marked
from bench.setting import Setting
from tide.codecs.json_schema import Encoded
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext
from tide.kafka.consumer import ConsumerRunner, consumer_config
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import producer_config
from tide.kafka.topics import ensure_topics
from tide.store.processed import Failure
from tide.topology import ConsumerGroup
from tide_dev.maven import runtime_classpath

TARGET = 0.7
# Tide's sync runner with its mark against FastStream: at least par with its batch
# subscriber, at least twice its per-message one (which commits after every message).
TARGET_BATCH_PEER = 1.0
TARGET_MESSAGE_PEER = 2.0
BATCH = 100  # records per poll, as Tide's runners take them
_runs = itertools.count()


class _WithoutMark(RecordProcessor):
    """The runner's path with the exactly-once transaction taken out: the handler runs bare.
    A decomposition for the table only; services never run this."""

    def _attempt(self, events: Sequence[CloudEvent]) -> tuple[list[bool], Failure | None]:
        context = HandlerContext(db=cast(Any, None), consumer=self.group.name, source=self.source)
        for event in events:
            self.handler(event, context)
        return [False] * len(events), None


class _NoFollowUps:
    def publish(self, event: CloudEvent) -> object:
        raise AssertionError(f"the no-op handler caused {event.type}")

    def emit(self, event: CloudEvent) -> Callable[[], object]:
        raise AssertionError(f"the no-op handler caused {event.type}")


def fill(setting: Setting, topic: str, records: int) -> list[Encoded]:
    """`records` Tide-encoded 200 B events (with their headers) on `topic`; returns them."""
    producer = Producer(producer_config({"bootstrap.servers": setting.bootstrap}, 30))
    sent = []
    for n in range(records):
        encoded = setting.codec.encode(recommendation(200, n))
        sent.append(encoded)
        while True:
            try:
                producer.produce(topic, encoded.value, encoded.key, headers=list(encoded.headers))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return sent


def decode_alone(setting: Setting, records: list[Encoded]) -> float:
    """The codec's decode (envelope, JSON, schema check) over the records, in memory: the
    most any runner that trusts nothing it reads could do on this machine."""
    decode = setting.codec.decode
    started = time.perf_counter()
    for record in records:
        decode(record.topic, record.value, record.headers)
    return len(records) / (time.perf_counter() - started)


def _next_offsets(messages: Sequence[Message]) -> list[TopicPartition]:
    """What to commit after a batch: each partition's last offset in it, plus one."""
    done: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None
        assert partition is not None
        assert offset is not None
        done[topic, partition] = offset + 1
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in done.items()]


def _parts(message: Message) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A fetched record's value and headers, as fill() wrote them (bytes both); the cast
    narrows confluent-kafka's wider types and costs nothing."""
    return cast(bytes, message.value()), cast("list[tuple[str, bytes]]", message.headers())


class Consumers:
    """Builds one timed run of each consumer on the topic, each run a fresh group."""

    def __init__(self, setting: Setting, base: ConsumerGroup, topic: str) -> None:
        self.setting = setting
        self.base = base
        self.topic = topic

    def _name(self) -> str:
        return f"{self.base.name}-{next(_runs)}"

    def _group(self) -> ConsumerGroup:
        group = self.base.model_copy(update={"name": self._name()})
        ensure_topics(self.setting.client, list(self.setting.catalog.side_topics(group)))
        return group.model_copy(update={"topics": (self.topic,)})

    def _processor(self, group: ConsumerGroup, clock: Clock, *, mark: bool) -> RecordProcessor:
        kind = RecordProcessor if mark else _WithoutMark
        return kind(
            group=group,
            handler=lambda _event, _context: clock.tick(),
            codec=self.setting.codec,
            database=self.setting.postgres_dsn,
            publisher=_NoFollowUps(),
            source="/bench",
        )

    def sync_runner(self, records: int, *, mark: bool) -> Path:
        def run() -> float:
            group = self._group()
            finished = threading.Event()
            clock = Clock(records, finished.set)
            processor = self._processor(group, clock, mark=mark)
            runner = ConsumerRunner(group, processor, {"bootstrap.servers": self.setting.bootstrap})
            thread = threading.Thread(target=runner.run, daemon=True)
            thread.start()
            finished.wait(timeout=600)
            runner.stop()
            thread.join(timeout=60)
            processor.close()
            return clock.rate

        return run

    def bare_confluent(self, records: int, *, marks: bool) -> Path:
        """The sync runner's work minus Tide, on the runner's client settings with
        auto-commit off: per consume(100) batch, `checked` on each record; with `marks`,
        the batch's ids marked in one psycopg transaction (`marked`, the runner's statement),
        the handler point inside it; then one asynchronous commit of the batch's offsets."""

        def run() -> float:
            group = self._name()
            config = consumer_config({"bootstrap.servers": self.setting.bootstrap}, self.base)
            # A fresh group; no auto-commit, as this loop commits each batch itself.
            consumer = Consumer(config | {"group.id": group, "enable.auto.commit": False})
            db = psycopg.connect(self.setting.postgres_dsn, autocommit=True) if marks else None
            codec = self.setting.codec
            consumer.subscribe([self.topic])
            clock = Clock(records, lambda: None)
            try:
                while clock.count < records:
                    batch = [m for m in consumer.consume(BATCH, timeout=0.5) if m.error() is None]
                    if not batch:
                        continue
                    ids = [checked(codec, *_parts(m)) for m in batch]
                    with marked(db, group, ids) if db else contextlib.nullcontext():
                        for _id in ids:
                            clock.tick()
                    consumer.commit(offsets=_next_offsets(batch), asynchronous=True)
            finally:
                consumer.close()
                if db is not None:
                    db.close()
            return clock.rate

        return run

    def do_nothing_confluent(self, records: int) -> Path:
        """Reference only: poll, count, store the offset (auto-commit); reads nothing."""

        def run() -> float:
            client = {"bootstrap.servers": self.setting.bootstrap}
            consumer = Consumer(consumer_config(client, self._group()))
            consumer.subscribe([self.topic])
            clock = Clock(records, lambda: None)
            while clock.count < records:
                for message in consumer.consume(BATCH, timeout=0.5):
                    if message.error() is None:
                        clock.tick()
                        consumer.store_offsets(message)
            consumer.close()
            return clock.rate

        return run

    def faststream(self, records: int, backend: peers.Backend) -> Path:
        return peers.subscriber(self.setting.bootstrap, self.topic, self._name, records, backend)

    def faststream_batch(self, records: int) -> Path:
        return peers.batch_subscriber(self.setting.bootstrap, self.topic, self._name, records)


def java_rate(bootstrap: str, topic: str, records: int) -> float:
    """ConsumerPerformance's fetch rate (records/s once the group is joined)."""
    command = [
        *("java", "-cp", runtime_classpath("kafka"), "org.apache.kafka.tools.ConsumerPerformance"),
        *("--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records)),
        *("--group", f"bench-java-{next(_runs)}", "--timeout", "60000"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    header, values = (line for line in out.splitlines() if "," in line)
    columns = dict(zip(re.split(r",\s*", header), re.split(r",\s*", values), strict=True))
    return float(columns["fetch.nMsg.sec"])


_WHAT = "decode, schema check, no-op handler, exactly-once mark, offset store"


def _bare(client: str, batch: str, db: str, commit: str) -> Callable[[bool], str]:
    """The baseline's text, with or without the marks."""

    def text(marks: bool) -> str:
        work = (
            f"per {batch} batch each record's headers and JSON value (orjson) parsed and the "
            "codec's compiled schema check run"
        )
        if marks:
            work += f", the batch's ids marked in one {db} transaction (Tide's INSERT … RETURNING)"
        same = "same work with the same marks" if marks else "same work"
        return f"bare {client} loop, {same}: {work}, then {commit}"

    return text


def _same_work_rows(
    path: str,
    rounds: Rounds,
    runner: str,
    bare: Callable[[bool], str],
    extra: Callable[[float, float], str],
) -> list[Row]:
    """The runner with its mark against the bare loop with the same marks (the mark's cost
    taken apart), and without it against the bare loop without; `extra(ours, baseline)`
    fills the last column."""
    rows = []
    for name, marks, case, what in (
        ("tide", True, "200 B", f"{runner}: {_WHAT}"),
        (
            "tide-unmarked",
            False,
            "200 B, no mark",
            f"{runner}: the same without the exactly-once mark (decomposition)",
        ),
    ):
        baseline = "bare-marks" if marks else "bare"
        ours_rate, baseline_rate = rounds.spread(name).median, rounds.spread(baseline).median
        notes = extra(ours_rate, baseline_rate)
        if marks:
            cost = rounds.ratio("bare-marks", "bare").text()
            notes += f"; the marks' own cost: bare with marks / bare without {cost}"
        rows.append(
            Row(
                path=path,
                case=case,
                ours=what,
                baseline=bare(marks),
                ratio=rounds.ratio(name, baseline),
                target=TARGET,
                ours_rate=ours_rate,
                baseline_rate=baseline_rate,
                extra=notes,
            )
        )
    return rows


def per_message_trial(consumers: Consumers, records: int) -> dict[peers.Backend, float]:
    """One run of FastStream's per-message subscriber on each backend: their warm-up, and
    the pick of the faster one for the rounds. At 1-4,000 records/s a run of 20,000 records
    takes 5-20 s; both backends in every round would add one to two minutes to a quick
    `make bench`, which must stay under ten."""
    return {b: consumers.faststream(records, b)() for b in peers.BACKENDS}


def _peer_rows(rounds: Rounds, trial: dict[peers.Backend, float]) -> list[Row]:
    """Tide's sync runner with its mark against FastStream's batch subscriber, and against
    its per-message subscriber on the backend that was faster in `trial`."""
    tide = f"sync runner with its mark: {_WHAT}"
    no_op = "no-op handler on the JSON FastStream decoded (no schema check, no mark)"
    faster = max(trial, key=trial.__getitem__)
    slower = next(b for b in peers.BACKENDS if b != faster)
    commit = {
        "aiokafka": "an awaited commit after each message's handler",
        "confluent": "an asynchronous commit after each message's handler",
    }
    return [
        Row(
            path="consume",
            case="200 B, vs FastStream batch",
            ours=tide,
            baseline=f"{peers.FASTSTREAM} batch subscriber, aiokafka: batch=True, "
            "max_records=100, AckPolicy.ACK (one awaited commit per batch, after the "
            f"handler); {no_op}; access log off",
            ratio=rounds.ratio("tide", "faststream-batch"),
            target=TARGET_BATCH_PEER,
            ours_rate=rounds.spread("tide").median,
            baseline_rate=rounds.spread("faststream-batch").median,
            # The peer writes nothing to PostgreSQL: how Tide compares without its mark.
            extra="the sync runner without its mark against the same subscriber:"
            f" {rounds.ratio('tide-unmarked', 'faststream-batch').text()}"
            f" ({rounds.spread('tide-unmarked').median:,.0f}/s)",
        ),
        Row(
            path="consume",
            case="200 B, vs FastStream per message",
            ours=tide,
            baseline=f"{peers.FASTSTREAM} per-message subscriber, {faster} (the faster "
            f"backend in a first run of each): AckPolicy.ACK ({commit[faster]}); {no_op}; "
            "access log off",
            ratio=rounds.ratio("tide", "faststream"),
            target=TARGET_MESSAGE_PEER,
            ours_rate=rounds.spread("tide").median,
            baseline_rate=rounds.spread("faststream").median,
            extra=f"first runs: {faster} {trial[faster]:,.0f}/s, {slower} "
            f"({commit[slower]}) {trial[slower]:,.0f}/s",
        ),
    ]


def measure(setting: Setting, mode: Mode) -> list[Row]:
    records = 20_000 * mode.scale
    # A topic of its own: the produce benchmark's records (other headers, another run's
    # events) are not this benchmark's, and every consumer here must read the same ones.
    source = setting.catalog.topic(str(setting.catalog.event(RECOMMENDATION).topic))
    topic = f"{source.name}-consume"
    ensure_topics(setting.client, [source.model_copy(update={"name": topic})])
    base = next(g for g in setting.catalog.consumer_groups if source.name in g.topics)
    sent = fill(setting, topic, records)
    consumers = Consumers(setting, base, topic)

    sync = interleaved(
        {
            "tide": consumers.sync_runner(records, mark=True),
            "bare-marks": consumers.bare_confluent(records, marks=True),
            "tide-unmarked": consumers.sync_runner(records, mark=False),
            "bare": consumers.bare_confluent(records, marks=False),
            "do-nothing": consumers.do_nothing_confluent(records),
        },
        mode,
    )
    trial = per_message_trial(consumers, records)
    # Tide between the two peers: each runs next to a Tide run in every round.
    against_peers = interleaved(
        {
            "faststream-batch": consumers.faststream_batch(records),
            "tide": consumers.sync_runner(records, mark=True),
            "tide-unmarked": consumers.sync_runner(records, mark=False),
            "faststream": consumers.faststream(records, max(trial, key=trial.__getitem__)),
        },
        mode,
    )
    java = java_rate(setting.bootstrap, topic, records)
    decoding = statistics.median(decode_alone(setting, sent) for _ in range(mode.rounds))
    decoded = f"codec.decode alone, in memory, {decoding:,.0f}/s"

    def references(rounds: Rounds, *, with_java: bool) -> Callable[[float, float], str]:
        idle = rounds.spread("do-nothing").median

        def text(ours: float, baseline: float) -> str:
            notes = [reference.do_nothing(idle)]
            if with_java:
                python = (ours, baseline, idle, decoding)
                notes.append(reference.java("ConsumerPerformance fetch rate", java, python))
            return "; ".join([*notes, decoded])

        return text

    return [
        *_same_work_rows(
            "consume",
            sync,
            "sync runner",
            _bare("confluent-kafka", "consume(100)", "psycopg", "one asynchronous offset commit"),
            references(sync, with_java=True),
        ),
        *_peer_rows(against_peers, trial),
    ]
