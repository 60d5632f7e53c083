"""Dead letters of a consumer group: how many wait, what they are, and sending them back.

Redrive reads `<group>.dlq` as its own consumer group (`tide-redrive.<group>`),
republishes each record (same key, value and event id; a `tide-redrive-count`
header added) to the group's first retry topic, so only that group sees it
again, or with `to_original` to the topic it came from; then commits that
record's DLQ offset. Interrupted between the two, a re-run republishes at most
the record in hand, and the group's dedupe on event id gives it no second effect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from tide.kafka import failures
from tide.kafka.processing import Record
from tide.kafka.producer import producer_config
from tide.kafka.transient import retrying
from tide.topology import ConsumerGroup

_POLL_S = 1.0


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def event_type(self) -> str:
        return self.headers.get("ce_type", "(undecodable)")

    @property
    def reason(self) -> str:
        return self.headers.get(failures.DEAD_LETTER_REASON, "")

    @property
    def error(self) -> str:
        return self.headers.get(failures.ERROR_MESSAGE, "")

    @property
    def event_id(self) -> str:
        return self.headers.get("ce_id", "")

    @property
    def attempt(self) -> str:
        """The attempt that failed last, as the runner numbered it."""
        return self.headers.get(failures.ATTEMPT, "")

    @property
    def origin(self) -> str:
        """Where the record was first consumed: `topic/partition@offset`."""
        topic = self.headers.get(failures.ORIGINAL_TOPIC, "")
        partition = self.headers.get(failures.ORIGINAL_PARTITION, "")
        return f"{topic}/{partition}@{self.headers.get(failures.ORIGINAL_OFFSET, '')}"


@dataclass
class RedriveReport:
    redriven: int = 0
    skipped: int = 0
    destinations: dict[str, int] = field(default_factory=dict)


def redrive_group(group: ConsumerGroup) -> str:
    return f"tide-redrive.{group.name}"


class DeadLetterQueue:
    """One group's DLQ, read and redriven through a dedicated consumer group."""

    def __init__(
        self, client: dict[str, Any], group: ConsumerGroup, *, timeout_s: float = 10.0
    ) -> None:
        self.client = client
        self.group = group
        self.timeout_s = timeout_s

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.client,
                "group.id": redrive_group(self.group),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )

    def _positions(self, consumer: Consumer) -> list[tuple[TopicPartition, int, int]]:
        """(partition, first unredriven offset, end offset) for every DLQ partition."""
        metadata = retrying(
            lambda: consumer.list_topics(self.group.dlq_topic, timeout=self.timeout_s),
            self.timeout_s,
        )
        topic = metadata.topics[self.group.dlq_topic]
        if topic.error is not None:
            raise LookupError(f"{self.group.dlq_topic}: {topic.error.str()}")
        partitions = [TopicPartition(self.group.dlq_topic, p) for p in sorted(topic.partitions)]
        committed = retrying(
            lambda: consumer.committed(partitions, timeout=self.timeout_s), self.timeout_s
        )
        result = []
        for tp in committed:
            low, high = self._watermarks(consumer, tp)
            start = tp.offset if tp.offset >= 0 else low
            result.append((TopicPartition(tp.topic, tp.partition), max(start, low), high))
        return result

    def _watermarks(self, consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
        low, high = retrying(
            lambda: consumer.get_watermark_offsets(tp, timeout=self.timeout_s), self.timeout_s
        )
        return int(low), int(high)

    def depth(self) -> int:
        consumer = self._consumer()
        try:
            return sum(high - start for _tp, start, high in self._positions(consumer))
        finally:
            consumer.close()

    def _read(self, consumer: Consumer) -> Iterator[Message]:
        """Every waiting record, partition by partition, oldest first."""
        positions = [
            (tp, start, high) for tp, start, high in self._positions(consumer) if high > start
        ]
        consumer.assign(
            [TopicPartition(tp.topic, tp.partition, start) for tp, start, _ in positions]
        )
        remaining = {tp.partition: high for tp, _start, high in positions}
        deadline = time.monotonic() + self.timeout_s * 3
        while remaining and time.monotonic() < deadline:
            message = consumer.poll(_POLL_S)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.pop(message.partition() or 0, None)
                    continue
                raise RuntimeError(f"reading {self.group.dlq_topic}: {error.str()}")
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset >= remaining.get(partition, -1):
                remaining.pop(partition, None)
                continue
            yield message
            if offset + 1 >= remaining.get(partition, 0):
                remaining.pop(partition, None)

    def show(self, *, limit: int = 20, event_type: str | None = None) -> list[DeadLetter]:
        consumer = self._consumer()
        found: list[DeadLetter] = []
        try:
            for message in self._read(consumer):
                letter = _letter(message)
                if event_type is None or letter.event_type == event_type:
                    found.append(letter)
                if len(found) >= limit:
                    break
        finally:
            consumer.close()
        return found

    def redrive(
        self,
        *,
        limit: int | None = None,
        event_type: str | None = None,
        to_original: bool = False,
        dry_run: bool = False,
    ) -> RedriveReport:
        """Send dead letters back. With a type filter, a partition stops at its first record
        of another type: committing past it would drop that record from the DLQ."""
        report = RedriveReport()
        consumer = self._consumer()
        producer = Producer(producer_config(self.client, self.timeout_s))
        blocked: set[int] = set()
        try:
            for message in self._read(consumer):
                if limit is not None and report.redriven >= limit:
                    break
                letter = _letter(message)
                if letter.partition in blocked:
                    continue
                if event_type is not None and letter.event_type != event_type:
                    blocked.add(letter.partition)
                    report.skipped += 1
                    continue
                destination = (
                    letter.headers.get(failures.ORIGINAL_TOPIC, self.group.topics[0])
                    if to_original or not self.group.retry_topics
                    else self.group.retry_topics[0]
                )
                report.destinations[destination] = report.destinations.get(destination, 0) + 1
                report.redriven += 1
                if dry_run:
                    continue
                self._republish(producer, message, letter, destination)
                consumer.commit(
                    offsets=[
                        TopicPartition(self.group.dlq_topic, letter.partition, letter.offset + 1)
                    ],
                    asynchronous=False,
                )
        finally:
            consumer.close()
        return report

    def _republish(
        self, producer: Producer, message: Message, letter: DeadLetter, topic: str
    ) -> None:
        count = int(letter.headers.get(failures.REDRIVE_COUNT, "0")) + 1
        # A fresh start: the failure bookkeeping goes, the envelope and origin stay.
        keep = {failures.ORIGINAL_TOPIC, failures.ORIGINAL_PARTITION, failures.ORIGINAL_OFFSET}
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v)
            for k, v in Record.of(message).headers
            if (k not in failures.TIDE_HEADERS or k in keep) and k != failures.REDRIVE_COUNT
        ]
        headers.append((failures.REDRIVE_COUNT, str(count).encode()))
        result: list[KafkaError | None] = []
        producer.produce(
            topic,
            key=message.key(),
            value=message.value(),
            headers=headers,
            on_delivery=lambda err, _msg: result.append(err),
        )
        producer.flush(self.timeout_s)
        if not result or result[0] is not None:
            raise RuntimeError(
                f"redrive of {self.group.dlq_topic}@{letter.offset} to {topic} failed: {result[:1]}"
            )


def _letter(message: Message) -> DeadLetter:
    record = Record.of(message)
    return DeadLetter(
        record.partition, record.offset, record.key, record.value, record.text_headers()
    )
