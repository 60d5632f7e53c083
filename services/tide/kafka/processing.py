"""Records through a handler, once: decode, dedupe, handle, publish what they caused, decide.

Apart from the Kafka client: the consumer runner (tide.kafka.consumer) hands the records
of a poll here and carries out each Outcome (store the offset, or produce to a retry
topic or the DLQ first).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Message
from prometheus_client import Counter as Metric

from tide import metrics
from tide.codecs.json_schema import EventCodec, UndecodableRecordError
from tide.errors import PLATFORM_ERRORS, PermanentError, pg_conninfo
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.kafka.failures import DeadLetterReason, FailedRecord, Route, route_failure
from tide.observability import correlation
from tide.sinks import EventSink
from tide.store.processed import Failure, emit_caused, handle_batch_once
from tide.topology import ConsumerGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record the processor needs, whichever client fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, message: Message) -> Record:
        """From a confluent-kafka message (which types every field as optional)."""
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a consumed message always has a topic, partition and offset")
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs if v is not None]
        key, value = message.key(), message.value()
        return cls(
            topic,
            partition,
            offset,
            key.encode() if isinstance(key, str) else key,
            value.encode() if isinstance(value, str) else value,
            headers,
        )

    def text_headers(self) -> dict[str, str]:
        return {k: v.decode(errors="replace") for k, v in self.headers if v is not None}


@dataclass(frozen=True)
class Outcome:
    """Done (store the offset); or first produce the record along `route`; or, when the
    platform itself failed (`unavailable`), leave the record where it is and try it again."""

    route: Route | None = None
    duplicate: bool = False
    unavailable: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.route is None and self.unavailable is None


# The outcomes of a batch that went through: shared, as outcomes are immutable (one object
# per record was a visible share of a batch, bench/).
_DONE = Outcome()
_DUPLICATE = Outcome(duplicate=True)


# A member frozen mid-transaction (SIGSTOP, a long GC, a stalled node) holds the row
# locks of the record it had in hand, and that record's partition moves to another
# member. The new owner gives up waiting after lock_timeout (a platform error: it
# pauses and tries again); a transaction left idle longer than the publish timeout
# allows is ended by the server, which frees the locks of a member frozen for good.
SESSION_OPTIONS = "-c lock_timeout=5s -c idle_in_transaction_session_timeout=60s"


class RecordProcessor:
    """Runs a group's handler for records, with exactly-once effects in PostgreSQL.

    Records are handled in batches, one transaction each: the processed marks of the
    whole batch are one statement and the commit is one round trip, which is what a
    record used to cost on its own (bench/). A record that fails ends its batch: the
    transaction is rolled back, the records before it are handled again in a new one,
    and the failed one is routed. So a failing handler runs once per delivery; a
    handler before it in the batch may run twice, which at-least-once allows anyway
    (its database effects were rolled back; what it emitted has derived ids, deduped).
    """

    def __init__(
        self,
        *,
        group: ConsumerGroup,
        handler: Handler,
        codec: EventCodec,
        database: str,
        publisher: EventSink,
        source: str,
    ) -> None:
        self.group = group
        self.handler = handler
        self.codec = codec
        self.database = database
        self._db: psycopg.Connection[Any] | None = None
        self.publisher = publisher
        self.source = source
        # Metric children, looked up once: `labels()` per record was a visible cost.
        self._seconds = metrics.HANDLER_SECONDS.labels(group.name)
        self._processed: dict[str, Metric] = {}
        # Every retry and dead-letter series exists (at 0) from the start: a panel or rule
        # over a series that was never written reads "no data", not "none".
        for topic in group.retry_topics:
            metrics.RETRIED.labels(group.name, topic.rsplit(".", 1)[-1])
        for reason in DeadLetterReason:
            metrics.DEAD_LETTERED.labels(group.name, str(reason))

    def process_batch(self, records: Sequence[Record]) -> list[Outcome]:
        """Handle `records` in order, as many as can share one transaction.

        Returns the outcomes of a prefix of `records`: each is done (handled or a
        duplicate, committed together) except perhaps the last, which failed (route
        it) or met the platform down (leave it in place). The caller carries these out
        and hands back the rest, without the partitions it paused.
        """
        events: list[CloudEvent] = []
        undecodable: UndecodableRecordError | None = None
        unavailable: BaseException | None = None
        for record in records:
            try:
                events.append(self.codec.decode(record.topic, record.value, record.headers))
            except UndecodableRecordError as error:
                undecodable = error
                break
            except PLATFORM_ERRORS as error:  # the registry is down: not the record's fault
                unavailable = error
                break
        outcomes = self._handle(records[: len(events)], events) if events else []
        stopped = len(outcomes) < len(events) or (outcomes and outcomes[-1].unavailable)
        if stopped or len(events) == len(records):
            return outcomes
        record = records[len(events)]
        where = f"{record.topic}/{record.partition}@{record.offset}"
        if unavailable is not None:
            log.error("%s: platform unavailable at %s: %s", self.group.name, where, unavailable)
            outcomes.append(Outcome(unavailable=unavailable))
        elif undecodable is not None:
            log.warning("undecodable record %s: %s", where, undecodable)
            outcomes.append(self._failed(record, undecodable, DeadLetterReason.UNDECODABLE))
        return outcomes

    def _handle(self, records: Sequence[Record], events: Sequence[CloudEvent]) -> list[Outcome]:
        """Decoded records (at least one) in one transaction; process_batch's contract."""
        try:
            duplicates, failure = self._attempt(events)
        except PLATFORM_ERRORS as error:
            # No connection, or the marks or the commit failed: nothing of the batch took
            # effect, and the first record waits in place.
            log.error("%s: platform unavailable at %s: %s", self.group.name, events[0].id, error)
            return [Outcome(unavailable=error)]
        except Exception as error:  # noqa: BLE001 - e.g. a handler's deferred constraint at commit
            # Whose fault is unknown: one record at a time finds it.
            if len(events) > 1:
                return self._handle(records[:1], events[:1])
            return [self._failure(records[0], events[0], error)]
        if failure is None:
            pairs = zip(records, duplicates, strict=True)
            handled = Counter(record.topic for record, duplicate in pairs if not duplicate)
            for topic, count in handled.items():
                self._count(topic, count)
            return [_DUPLICATE if duplicate else _DONE for duplicate in duplicates]
        index, failed = failure
        # The records before the failed one were rolled back with it: handle them again.
        done = self._handle(records[:index], events[:index]) if index else []
        if len(done) < index or (done and not done[-1].done):
            return done
        return [*done, self._failure(records[index], events[index], failed)]

    def _attempt(self, events: Sequence[CloudEvent]) -> tuple[list[bool], Failure | None]:
        """One transaction for the events (see handle_batch_once). What the handlers caused
        is held until every handler of the batch has run, then sent at once and its acks
        awaited together before the commit: a record that fails rolls its batch back with
        nothing sent, so the records before it, handled again, cause their events once.
        (Waiting on each in turn, linger and a round trip per event, capped the reference
        platform's busiest producing group at 135/s.)"""
        db = self._connection()
        caused: list[CloudEvent] = []
        context = HandlerContext(db=db, consumer=self.group.name, source=self.source)

        def run(event: CloudEvent) -> None:
            started = time.perf_counter()
            with correlation(event.correlationid):
                try:
                    emit_caused(self.handler, event, context, caused.append)
                finally:
                    self._seconds.observe(time.perf_counter() - started)

        def send_and_await() -> None:
            for wait in [self.publisher.emit(event) for event in caused]:
                wait()

        return handle_batch_once(db, self.group.name, events, run, send_and_await)

    def _failure(self, record: Record, event: CloudEvent, error: Exception) -> Outcome:
        with correlation(event.correlationid):
            if isinstance(error, PLATFORM_ERRORS):
                log.error("%s: platform unavailable at %s: %s", self.group.name, event.id, error)
                return Outcome(unavailable=error)
            if isinstance(error, PermanentError):
                log.warning("%s: permanent failure of %s: %s", self.group.name, event.id, error)
                return self._failed(record, error, DeadLetterReason.PERMANENT)
            log.warning("%s: failure of %s: %r", self.group.name, event.id, error)
            return self._failed(record, error, None)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.broken or self._db.closed:
            # First use, or PostgreSQL went away: a fresh connection (a failure here is
            # a platform error, and the record waits in place).
            self._db = psycopg.connect(
                pg_conninfo(self.database), autocommit=True, options=SESSION_OPTIONS
            )
        return self._db

    def _count(self, topic: str, handled: int) -> None:
        counter = self._processed.get(topic)
        if counter is None:
            counter = self._processed[topic] = metrics.PROCESSED.labels(self.group.name, topic)
        counter.inc(handled)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _failed(
        self, record: Record, error: BaseException, reason: DeadLetterReason | None
    ) -> Outcome:
        failed = FailedRecord(record.topic, record.partition, record.offset, record.text_headers())
        route = route_failure(self.group, failed, error, reason)
        metrics.FAILED.labels(self.group.name, type(error).__name__).inc()
        if route.reason is None:
            metrics.RETRIED.labels(self.group.name, route.topic.rsplit(".", 1)[-1]).inc()
        else:
            metrics.DEAD_LETTERED.labels(self.group.name, str(route.reason)).inc()
        return Outcome(route=route)
