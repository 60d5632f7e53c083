"""One record through a handler, once: decode, dedupe, handle, publish what it caused, decide.

Transport-agnostic: both runners (confluent-kafka and aiokafka) hand records
here and carry out the Outcome (store the offset, or produce to a retry topic
or the DLQ first).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Message

from tide import metrics
from tide.codecs.json_schema import EventCodec, UndecodableRecordError
from tide.errors import PermanentError, PlatformUnavailableError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.kafka.dead_letters import DeadLetterReason, FailedRecord, Route, route_failure
from tide.observability import correlation
from tide.routing import EventSink
from tide.store.processed import handle_once
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


# Failures of the platform, not of the record: PostgreSQL, Kafka or RabbitMQ unreachable,
# or a row held by a member that lost the partition (lock_timeout). Sending the record
# through the retry topics would only move it toward the DLQ.
PLATFORM_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    PlatformUnavailableError,
)


# A member frozen mid-transaction (SIGSTOP, a long GC, a stalled node) holds the row
# locks of the record it had in hand, and that record's partition moves to another
# member. The new owner gives up waiting after lock_timeout (a platform error: it
# pauses and tries again); a transaction left idle longer than the publish timeout
# allows is ended by the server, which frees the locks of a member frozen for good.
SESSION_OPTIONS = "-c lock_timeout=5s -c idle_in_transaction_session_timeout=60s"


class RecordProcessor:
    """Runs a group's handler for records, with exactly-once effects in PostgreSQL."""

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

    def process(self, record: Record) -> Outcome:
        failed = FailedRecord(record.topic, record.partition, record.offset, record.text_headers())
        try:
            event = self.codec.decode(record.topic, record.value, record.headers)
        except UndecodableRecordError as error:
            log.warning(
                "undecodable record %s/%d@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                error,
            )
            return self._failed(failed, error, DeadLetterReason.UNDECODABLE)
        started = time.perf_counter()
        with correlation(event.correlationid):
            try:
                duplicate = self._handle_once(event)
            except PLATFORM_ERRORS as error:
                log.error(
                    "%s: platform unavailable while handling %s: %s",
                    self.group.name,
                    event.id,
                    error,
                )
                return Outcome(unavailable=error)
            except PermanentError as error:
                log.warning("%s: permanent failure of %s: %s", self.group.name, event.id, error)
                return self._failed(failed, error, DeadLetterReason.PERMANENT)
            except Exception as error:  # noqa: BLE001 - anything else is worth a retry
                log.warning("%s: failure of %s: %r", self.group.name, event.id, error)
                return self._failed(failed, error, None)
            finally:
                metrics.HANDLER_SECONDS.labels(self.group.name).observe(
                    time.perf_counter() - started
                )
        if not duplicate:
            metrics.PROCESSED.labels(self.group.name, record.topic).inc()
        return Outcome(duplicate=duplicate)

    def _handle_once(self, event: CloudEvent) -> bool:
        if self._db is None or self._db.broken or self._db.closed:
            # First use, or PostgreSQL went away: a fresh connection (a failure here is
            # a platform error, and the record waits in place).
            self._db = psycopg.connect(self.database, autocommit=True, options=SESSION_OPTIONS)
        context = HandlerContext(db=self._db, consumer=self.group.name, source=self.source)
        return handle_once(self._db, context, self.handler, event, self.publisher.publish)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def _failed(
        self, record: FailedRecord, error: BaseException, reason: DeadLetterReason | None
    ) -> Outcome:
        route = route_failure(self.group, record, error, reason)
        metrics.FAILED.labels(self.group.name, type(error).__name__).inc()
        if route.reason is None:
            metrics.RETRIED.labels(self.group.name, route.topic.rsplit(".", 1)[-1]).inc()
        else:
            metrics.DEAD_LETTERED.labels(self.group.name, str(route.reason)).inc()
        return Outcome(route=route)
