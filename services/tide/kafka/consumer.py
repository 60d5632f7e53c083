"""The synchronous consumer runner (confluent-kafka): at-least-once, non-blocking retries, DLQ.

Offsets are stored only after a record is done (handled, or safely produced to
its retry topic or DLQ) and committed by librdkafka's auto-commit, on every
revoke (cooperative-sticky assignment) and on shutdown. A record on a retry
topic that is not yet due pauses only its own partition.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from tide import metrics
from tide.errors import UNAVAILABLE_BACKOFF_S
from tide.kafka.failures import NOT_BEFORE, Route
from tide.kafka.processing import Outcome, Record, RecordProcessor
from tide.kafka.producer import producer_config
from tide.kafka.transient import REBOOTSTRAP
from tide.kafka.wedge import WedgeWatch
from tide.liveness import Heartbeat
from tide.topology import ConsumerGroup

log = logging.getLogger(__name__)

_LAG_EVERY_S = 5.0
# A member out of its group that tide.kafka.wedge finds wedged gets a new client. Should
# that not help either, liveness fails (UNJOINED_BOUND_S) and the kubelet restarts it.
UNJOINED_BOUND_S = 90.0
# How long a poll waits for a first record: the loop's tick when idle (lag reports, the
# wedge watch, the liveness heartbeat), never a record's delay.
POLL_WAIT_S = 0.5
# A stop ends within this, broker or no broker (the chart's grace period is 45 s): the
# batch in hand (its acks wait at most the publish timeout), close() (CLOSE_WAIT_S), then
# the retry/DLQ producer's flush (the publish timeout again).
DRAIN_BOUND_S = 30.0
# close() commits what is stored and leaves the group. After a broker crash (not a clean
# shutdown) librdkafka 2.16's close can wait for a coordinator for ever; we wait this long
# (the session timeout) and go. Offsets not committed are redelivered to the group's next
# owner, which drops what the dedupe marks say is done: at-least-once still holds.
CLOSE_WAIT_S = 10.0


def consumer_config(client: dict[str, Any], group: ConsumerGroup) -> dict[str, Any]:
    return {
        **client,
        **REBOOTSTRAP,
        "group.id": group.name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        # We store an offset only once its record is done: at-least-once.
        "enable.auto.offset.store": False,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        # A subscribed topic created after start (a new retry topic) is noticed
        # within this, not librdkafka's default five minutes.
        "topic.metadata.refresh.interval.ms": 15_000,
        # The group's state (cgrp.state, cgrp.join_state) for the liveness check.
        "statistics.interval.ms": 5_000,
    }


def _close_aside(consumer: Consumer, name: str) -> threading.Thread:
    """close() on a thread of its own: without a group coordinator it can wait for ever,
    and neither a stop nor the loop may wait with it."""
    closing = threading.Thread(target=consumer.close, name=name, daemon=True)
    closing.start()
    return closing


class ConsumerRunner:
    """Consumes a group's topics and retry topics and feeds a RecordProcessor."""

    def __init__(
        self,
        group: ConsumerGroup,
        processor: RecordProcessor,
        client: dict[str, Any],
        *,
        timeout_s: float = 10.0,
        batch: int = 100,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.group = group
        self.processor = processor
        self.batch = batch
        self.heartbeat = heartbeat
        self._client = client
        self._consumer = self._new_consumer()
        self._joined_at = time.monotonic()
        self._wedge = WedgeWatch(client)
        self._group_state = "init/init"
        # Retry and DLQ copies are the original bytes plus headers: a plain producer.
        self._router = Producer(producer_config(client, timeout_s))
        self._routing_failing_since: float | None = None
        self._router_wedge = WedgeWatch(client, producer=True)
        self._timeout_s = timeout_s
        self._retry_topics = set(group.retry_topics)
        self._paused: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._last_lag = 0.0

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and close (SIGTERM calls this)."""
        self._stop.set()

    def _new_consumer(self) -> Consumer:
        consumer: Consumer | None = None

        def stats(raw: str) -> None:
            if consumer is self._consumer:  # not a replaced client, closing elsewhere
                self._on_stats(raw)

        consumer = Consumer(consumer_config(self._client, self.group), stats_cb=stats)
        return consumer

    def _subscribe(self) -> None:
        topics = [*self.group.topics, *self.group.retry_topics]
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("group %s consuming %s", self.group.name, ", ".join(topics))

    def run(self) -> None:
        self._subscribe()
        try:
            while not self._stop.is_set():
                self._resume_due()
                messages = self._poll()
                self._handle([r for m in messages if (r := self._ready(m)) is not None])
                self._report_lag()
                self._rejoin_if_wedged()
                self._replace_router_if_wedged()
                if self.heartbeat is not None:
                    self.heartbeat.beat()
        finally:
            self._close()

    def _poll(self) -> list[Message]:
        """Up to a batch of records, returning as soon as there is one. `consume(n, t)` waits
        for all n or for t: at low load every record waited out the timeout (0.5 s a hop).
        So: what is already fetched; if nothing, wait for the first record alone, then take
        whatever arrived with it."""
        messages = self._consumer.consume(self.batch, timeout=0)
        if messages:
            return messages
        messages = self._consumer.consume(1, timeout=POLL_WAIT_S)
        if messages:
            messages += self._consumer.consume(self.batch - 1, timeout=0)
        return messages

    def _rejoin_if_wedged(self) -> None:
        """Start a new client when tide.kafka.wedge finds this one wedged outside its group:
        0 members and the backlog growing while the process looks alive. A new client
        bootstraps afresh and rejoins."""
        if not self._wedge.wedged(self._joined_at):
            return
        log.warning(
            "group %s: not joined for %.0f s (state %s) while Kafka answered for %.0f s: "
            "new consumer",
            self.group.name,
            time.monotonic() - self._joined_at,
            self._group_state,
            self._wedge.answered_for(),
        )
        metrics.CONSUMER_REJOINS.labels(self.group.name).inc()
        wedged = self._consumer
        self._paused.clear()
        self._consumer = self._new_consumer()
        self._joined_at = time.monotonic()
        self._wedge.replaced()
        self._subscribe()
        # Closing the old client may wait for the coordinator it lost: not on this loop.
        _close_aside(wedged, "close-wedged")

    def _replace_router_if_wedged(self) -> None:
        """A new producer for retry and DLQ copies when this one has failed them all for as
        long as tide.kafka.wedge allows while Kafka answers: the same librdkafka wedge."""
        failing = self._routing_failing_since
        if failing is None or not self._router_wedge.wedged(failing):
            return
        log.warning(
            "group %s: retry and DLQ copies failed for %.0f s while Kafka answered for %.0f s: "
            "new producer",
            self.group.name,
            time.monotonic() - failing,
            self._router_wedge.answered_for(),
        )
        metrics.PRODUCER_REPLACEMENTS.inc()
        wedged = self._router
        self._router = Producer(producer_config(self._client, self._timeout_s))
        self._routing_failing_since = None
        self._router_wedge.replaced()
        # Each copy was flushed (and failed) already; letting it go may still block a moment.
        threading.Thread(target=wedged.flush, args=(0,), name="drop-wedged", daemon=True).start()

    def unjoined(self) -> str | None:
        """Why this member is wedged outside its group, or None (see UNJOINED_BOUND_S)."""
        out = time.monotonic() - self._joined_at
        if out <= UNJOINED_BOUND_S:
            return None
        return f"group {self.group.name}: not joined for {out:.0f} s (state {self._group_state})"

    def _on_stats(self, raw: str) -> None:
        # Served from consume(), on the loop's own thread.
        group = json.loads(raw).get("cgrp") or {}
        self._group_state = f"{group.get('state')}/{group.get('join_state')}"
        if group.get("state") == "up" and group.get("join_state") == "steady":
            self._joined_at = time.monotonic()

    def _ready(self, message: Message) -> Record | None:
        """The record to process now; None for an error event, a paused partition's
        leftovers or a retry that is not yet due (which pauses its partition)."""
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return None
            if error.fatal():
                raise KafkaException(error)
            log.warning("consumer error: %s", error)
            return None
        record = Record.of(message)
        if (record.topic, record.partition) in self._paused:
            return None  # fetched before the pause; re-read after the seek
        if record.topic in self._retry_topics:
            due_ms = int(record.text_headers().get(NOT_BEFORE, "0"))
            if due_ms > time.time() * 1000:
                self._pause(record.topic, record.partition, record.offset, due_ms / 1000)
                return None
        return record

    def _handle(self, ready: list[Record]) -> None:
        # A stop finishes the batch in hand (one transaction), not the whole poll.
        while ready and not self._stop.is_set():
            outcomes = self.processor.process_batch(ready)
            done: dict[tuple[str, int], int] = {}
            for record, outcome in zip(ready, outcomes, strict=False):
                if self._settle(record, outcome):
                    done[record.topic, record.partition] = record.offset + 1
            self._store(done)
            ready = [
                r for r in ready[len(outcomes) :] if (r.topic, r.partition) not in self._paused
            ]

    def _settle(self, record: Record, outcome: Outcome) -> bool:
        """Carry out an outcome; True when the record is done and its offset may be stored."""
        topic, partition, offset = record.topic, record.partition, record.offset
        if outcome.unavailable is not None:
            metrics.PLATFORM_WAITS.labels(self.group.name).inc()
            self._pause(topic, partition, offset, time.time() + UNAVAILABLE_BACKOFF_S)
            return False
        if outcome.route is not None and not self._produce(record, outcome.route):
            self._pause(topic, partition, offset, time.time() + UNAVAILABLE_BACKOFF_S)
            return False
        return True

    def _store(self, done: dict[tuple[str, int], int]) -> None:
        for (topic, partition), offset in done.items():
            try:
                self._consumer.store_offsets(offsets=[TopicPartition(topic, partition, offset)])
            except KafkaException as exc:
                # The partition moved to another member while its records were in hand
                # (a process frozen past the session timeout); the new owner dedupes them.
                log.warning("%s/%d@%d done, but no longer ours: %s", topic, partition, offset, exc)

    def _produce(self, record: Record, route: Route) -> bool:
        """Copy the record to its retry topic or DLQ and wait for the broker's ack."""
        result: list[KafkaError | None] = []
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in record.headers if k not in route.headers
        ]
        headers += [(k, v.encode()) for k, v in route.headers.items()]
        self._router.produce(
            route.topic,
            key=record.key,
            value=record.value,
            headers=headers,
            on_delivery=lambda err, _msg: result.append(err),
        )
        self._router.flush(self._timeout_s)
        if not result or result[0] is not None:
            if self._routing_failing_since is None:
                self._routing_failing_since = time.monotonic()
            log.error(
                "could not write %s/%d@%d to %s: %s",
                record.topic,
                record.partition,
                record.offset,
                route.topic,
                result[:1],
            )
            return False
        self._routing_failing_since = None
        return True

    def _pause(self, topic: str, partition: int, offset: int, until: float) -> None:
        tp = TopicPartition(topic, partition, offset)
        try:
            self._consumer.pause([tp])
            self._consumer.seek(tp)
        except KafkaException as exc:
            log.warning("%s/%d left to its new owner: %s", topic, partition, exc)
            return
        self._paused[(topic, partition)] = until

    def _resume_due(self) -> None:
        now = time.time()
        due = [key for key, until in self._paused.items() if until <= now]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])
            for key in due:
                del self._paused[key]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # librdkafka keeps a partition's pause flag across a rebalance; a partition that
        # comes back to us must not stay paused by a decision we no longer track.
        if consumer is self._consumer:  # a replaced client's callbacks change nothing here
            self._forget_pauses(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Hand over what is done before the partitions move (no re-processing storm).
        # Not when closing: close() commits by itself, within its bound; a synchronous
        # commit with no broker waits for a coordinator for ever.
        if consumer is self._consumer:
            self._forget_pauses(consumer, partitions)
            if not self._stop.is_set():
                self._commit()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self._consumer:
            self._forget_pauses(consumer, partitions)

    def _forget_pauses(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        paused = [tp for tp in partitions if (tp.topic, tp.partition) in self._paused]
        for tp in paused:
            del self._paused[(tp.topic, tp.partition)]
        if partitions:
            try:
                consumer.resume([TopicPartition(tp.topic, tp.partition) for tp in partitions])
            except KafkaException as exc:
                log.warning("could not resume %d partition(s): %s", len(partitions), exc)

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit failed: %s", exc)

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < _LAG_EVERY_S:
            return
        self._last_lag = now
        assignment = self._consumer.assignment()
        if not assignment:
            return
        for tp in self._consumer.position(assignment):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                metrics.CONSUMER_LAG.labels(self.group.name, tp.topic, str(tp.partition)).set(
                    max(high - tp.offset, 0)
                )

    def _close(self) -> None:
        # Not commit(asynchronous=False) first: with no coordinator it never returns. close()
        # commits the stored offsets itself (auto-commit is on), on a thread we stop waiting
        # for after CLOSE_WAIT_S.
        closing = _close_aside(self._consumer, f"close-{self.group.name}")
        closing.join(CLOSE_WAIT_S)
        self._router.flush(self._timeout_s)
        if closing.is_alive():
            log.error(
                "group %s: Kafka did not let the consumer close within %.0f s (no group "
                "coordinator); leaving without it: records done since the last commit go to "
                "the next owner, which skips them as already done",
                self.group.name,
                CLOSE_WAIT_S,
            )
            return
        log.info("group %s closed", self.group.name)
