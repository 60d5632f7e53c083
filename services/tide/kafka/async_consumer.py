"""The asyncio consumer runner (aiokafka): the same handlers, retries and DLQ as the sync runner.

It commits processed offsets itself (auto-commit off): every second, on every
revoke and on shutdown. aiokafka has no cooperative rebalancing, so a rebalance
stops the whole group briefly; the sync runner is the one to choose for large
groups. Handlers are synchronous functions and run in a worker thread, a batch at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from tide.errors import UNAVAILABLE_BACKOFF_S
from tide.kafka.dead_letters import NOT_BEFORE, Route
from tide.kafka.processing import Outcome, Record, RecordProcessor
from tide.topology import ConsumerGroup

log = logging.getLogger(__name__)
_COMMIT_EVERY_S = 1.0


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: AsyncConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.commit()
        for tp in revoked:
            self.runner.paused.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None


class AsyncConsumerRunner:
    def __init__(
        self,
        group: ConsumerGroup,
        processor: RecordProcessor,
        client: dict[str, Any],
        *,
        batch: int = 100,
    ) -> None:
        self.group = group
        self.processor = processor
        self.client = client
        self.batch = batch
        self.paused: dict[TopicPartition, float] = {}
        self._done: dict[TopicPartition, int] = {}
        self._retry_topics = set(group.retry_topics)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer = AIOKafkaConsumer(
            **self.client,
            group_id=self.group.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            metadata_max_age_ms=15_000,
        )
        self._producer = AIOKafkaProducer(**self.client, enable_idempotence=True, acks="all")
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(
            [*self.group.topics, *self.group.retry_topics], listener=_CommitOnRevoke(self)
        )
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                self._resume_due()
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self.batch)
                await self._handle(stop, self._ready(batches))
                if time.monotonic() - last_commit >= _COMMIT_EVERY_S:
                    await self.commit()
                    last_commit = time.monotonic()
        finally:
            await self.commit()
            await self._consumer.stop()
            await self._producer.stop()

    def _ready(self, batches: dict[TopicPartition, list[Any]]) -> list[Record]:
        """The records to process now: not those of a paused partition, nor a retry that is
        not yet due (which pauses its partition)."""
        ready = []
        for tp, messages in batches.items():
            for message in messages:
                if tp in self.paused:
                    break
                headers = [(k, v) for k, v in (message.headers or ()) if v is not None]
                record = Record(
                    tp.topic, tp.partition, message.offset, message.key, message.value, headers
                )
                if tp.topic in self._retry_topics:
                    due_ms = int(record.text_headers().get(NOT_BEFORE, "0"))
                    if due_ms > time.time() * 1000:
                        self._pause(tp, message.offset, due_ms / 1000)
                        break
                ready.append(record)
        return ready

    async def _handle(self, stop: asyncio.Event, ready: list[Record]) -> None:
        # Handlers are synchronous: one worker-thread hop per batch, not per record. A
        # stop finishes the batch in hand (one transaction), not the whole poll.
        while ready and not stop.is_set():
            outcomes = await asyncio.to_thread(self.processor.process_batch, ready)
            for record, outcome in zip(ready, outcomes, strict=False):
                await self._settle(record, outcome)
            ready = [
                r
                for r in ready[len(outcomes) :]
                if TopicPartition(r.topic, r.partition) not in self.paused
            ]

    async def _settle(self, record: Record, outcome: Outcome) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if outcome.unavailable is not None:
            self._pause(tp, record.offset, time.time() + UNAVAILABLE_BACKOFF_S)
            return
        if outcome.route is not None and not await self._produce(record, outcome.route):
            self._pause(tp, record.offset, time.time() + UNAVAILABLE_BACKOFF_S)
            return
        self._done[tp] = record.offset + 1

    async def _produce(self, record: Record, route: Route) -> bool:
        assert self._producer is not None
        headers = [(k, v) for k, v in record.headers if k not in route.headers]
        headers += [(k, v.encode()) for k, v in route.headers.items()]
        try:
            await self._producer.send_and_wait(
                route.topic, record.value, key=record.key, headers=headers
            )
        except KafkaError as exc:
            log.error(
                "could not write %s@%d to %s: %s", record.topic, record.offset, route.topic, exc
            )
            return False
        return True

    def _pause(self, tp: TopicPartition, offset: int, until: float) -> None:
        assert self._consumer is not None
        try:
            self._consumer.pause(tp)
            self._consumer.seek(tp, offset)
        except IllegalStateError as exc:
            # Revoked while this record was in hand; its new owner reads it again.
            log.warning("%s left to its new owner: %s", tp, exc)
            return
        self.paused[tp] = until

    def _resume_due(self) -> None:
        assert self._consumer is not None
        now = time.time()
        for tp in [tp for tp, until in self.paused.items() if until <= now]:
            self._consumer.resume(tp)
            del self.paused[tp]

    async def commit(self) -> None:
        if self._consumer is None or not self._done:
            return
        done, self._done = self._done, {}
        try:
            await self._consumer.commit(done)
        except KafkaError as exc:
            log.warning("commit failed (records will be redelivered and deduped): %s", exc)
