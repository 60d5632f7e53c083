"""Consume: Tide's runners against bare client loops on the same topic, Kafka's Java
ConsumerPerformance as the ceiling.

Each run is a fresh consumer group reading the same records from the start, and is timed
from its first record to its last (not the group join). Tide's runners are measured twice:
as every service runs them (decode, schema check, a no-op handler inside the exactly-once
transaction that marks the event processed in PostgreSQL, offset store), and with that
transaction taken out, which splits the runner's own cost from PostgreSQL's.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, Producer
from tests.harness.maven import runtime_classpath

from bench.measure import Mode, Path, Row, interleaved
from bench.payloads import RECOMMENDATION, recommendation
from bench.setting import Setting
from tide.codecs.json_schema import Encoded
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext
from tide.kafka.async_consumer import AsyncConsumerRunner
from tide.kafka.consumer import ConsumerRunner, consumer_config
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import producer_config
from tide.kafka.topics import ensure_topics
from tide.store.processed import Failure
from tide.topology import ConsumerGroup

TARGET = 0.7
_runs = itertools.count()


class Clock:
    """Counts handled records; knows the rate from the first to the last and says when done."""

    def __init__(self, target: int, done: Callable[[], None]) -> None:
        self.target = target
        self.done = done
        self.count = 0
        self.first = self.last = 0.0

    def tick(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.target:
            self.last = time.perf_counter()
            self.done()

    @property
    def rate(self) -> float:
        if self.count < self.target:
            raise RuntimeError(f"only {self.count} of {self.target} records were consumed")
        return (self.target - 1) / (self.last - self.first)


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


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(callback)


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


class Consumers:
    """Builds one timed run of each consumer on the topic, each run a fresh group."""

    def __init__(self, setting: Setting, base: ConsumerGroup, topic: str) -> None:
        self.setting = setting
        self.base = base
        self.topic = topic

    def _group(self) -> ConsumerGroup:
        group = self.base.model_copy(update={"name": f"{self.base.name}-{next(_runs)}"})
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

    def async_runner(self, records: int, *, mark: bool) -> Path:
        async def consume() -> float:
            group = self._group()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            clock = Clock(records, lambda: _call_soon(loop, stop.set))
            processor = self._processor(group, clock, mark=mark)
            runner = AsyncConsumerRunner(
                group, processor, {"bootstrap_servers": self.setting.bootstrap}
            )
            await asyncio.wait_for(runner.run(stop), timeout=600)
            processor.close()
            return clock.rate

        return lambda: asyncio.run(consume())

    def bare_confluent(self, records: int) -> Path:
        """poll, count, store the offset (auto-commit), as the runner's client is configured."""

        def run() -> float:
            client = {"bootstrap.servers": self.setting.bootstrap}
            consumer = Consumer(consumer_config(client, self._group()))
            consumer.subscribe([self.topic])
            clock = Clock(records, lambda: None)
            while clock.count < records:
                for message in consumer.consume(100, timeout=0.5):
                    if message.error() is None:
                        clock.tick()
                        consumer.store_offsets(message)
            consumer.close()
            return clock.rate

        return run

    def bare_aiokafka(self, records: int) -> Path:
        """getmany, count, commit every second, as the async runner does."""

        async def consume() -> float:
            consumer = AIOKafkaConsumer(
                self.topic,
                bootstrap_servers=self.setting.bootstrap,
                group_id=self._group().name,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            clock = Clock(records, lambda: None)
            last_commit = time.monotonic()
            try:
                while clock.count < records:
                    batches = await consumer.getmany(timeout_ms=500, max_records=100)
                    for messages in batches.values():
                        for _message in messages:
                            clock.tick()
                    if time.monotonic() - last_commit >= 1.0:
                        await consumer.commit()
                        last_commit = time.monotonic()
                await consumer.commit()
            finally:
                await consumer.stop()
            return clock.rate

        return lambda: asyncio.run(consume())


def java_ceiling(bootstrap: str, topic: str, records: int) -> float:
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


def measure(setting: Setting, mode: Mode) -> list[Row]:
    records = 20_000 * mode.scale
    # A topic of its own: the produce benchmark's bare records (no envelope) would be
    # undecodable here and turn this into a dead-letter benchmark.
    source = setting.catalog.topic(str(setting.catalog.event(RECOMMENDATION).topic))
    topic = f"{source.name}-consume"
    ensure_topics(setting.client, [source.model_copy(update={"name": topic})])
    base = next(g for g in setting.catalog.consumer_groups if source.name in g.topics)
    sent = fill(setting, topic, records)
    consumers = Consumers(setting, base, topic)

    sync = interleaved(
        {
            "tide": consumers.sync_runner(records, mark=True),
            "tide-unmarked": consumers.sync_runner(records, mark=False),
            "bare": consumers.bare_confluent(records),
        },
        mode,
    )
    ceiling = java_ceiling(setting.bootstrap, topic, records)
    decoding = statistics.median(decode_alone(setting, sent) for _ in range(mode.rounds))
    asynchronous = interleaved(
        {
            "tide": consumers.async_runner(records, mark=True),
            "tide-unmarked": consumers.async_runner(records, mark=False),
            "bare": consumers.bare_aiokafka(records),
        },
        mode,
    )
    decoded = f"codec.decode alone, in memory, {decoding:,.0f}/s"
    java = f"Java ConsumerPerformance {ceiling:,.0f}/s (ceiling); {decoded}"
    rows = []
    for path, rounds, runner, bare, extra in (
        ("consume", sync, "sync runner", "bare confluent-kafka poll loop", java),
        ("consume async", asynchronous, "async runner", "bare aiokafka getmany loop", decoded),
    ):
        for name, case, what in (
            (
                "tide",
                "200 B",
                "decode, schema check, no-op handler, exactly-once mark, offset store",
            ),
            (
                "tide-unmarked",
                "200 B, no mark",
                "the same without the exactly-once mark (decomposition)",
            ),
        ):
            rows.append(
                Row(
                    path=path,
                    case=case,
                    ours=f"{runner}: {what}",
                    baseline=bare,
                    ratio=rounds.ratio(name, "bare"),
                    target=TARGET,
                    ours_rate=rounds.spread(name).median,
                    baseline_rate=rounds.spread("bare").median,
                    extra=extra,
                )
            )
    return rows
