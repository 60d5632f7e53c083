"""Publishing events to Kafka: idempotent, acks=all, and never a silent drop.

`publish` returns only once the broker acknowledged the write, or raises
PublishError. A background thread serves librdkafka's delivery callbacks so
async callers (the API) await their own delivery without blocking the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Counter

from tide import metrics
from tide.codecs.json_schema import EventCodec
from tide.errors import PlatformUnavailableError
from tide.events.envelope import CloudEvent
from tide.kafka.transient import REBOOTSTRAP
from tide.kafka.wedge import WedgeWatch

log = logging.getLogger(__name__)


class PublishError(PlatformUnavailableError):
    """The broker did not confirm an event in time; it may or may not have been written."""


class NotSentError(PublishError):
    """The event was never handed to Kafka (known unreachable, the local queue full, the
    publisher closed): it was not written."""


# While librdkafka reports every broker down, this producer asks Kafka this often (on its
# callback thread) whether it answers again.
UNREACHABLE_PROBE_EVERY_S = 1.0


@dataclass(frozen=True)
class Delivery:
    topic: str
    partition: int
    offset: int


def producer_config(client: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return {
        **client,
        **REBOOTSTRAP,
        "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # librdkafka gives up (and reports) a message after this; we never wait longer.
        "delivery.timeout.ms": int(timeout_s * 1000),
        "message.timeout.ms": int(timeout_s * 1000),
    }


class EventPublisher:
    """One producer per process, shared by every request or handler."""

    def __init__(
        self, client: dict[str, Any], codec: EventCodec, *, timeout_s: float = 10.0
    ) -> None:
        self.codec = codec
        self.timeout_s = timeout_s
        self._client = client
        # Why Kafka is known unreachable, and since when: librdkafka's own report that every
        # broker is down, or a failed readiness probe. A request then gets its 503 at once
        # instead of after the publish timeout; a delivery or a probe that answers clears it.
        self._unreachable: tuple[str, float] | None = None
        self._last_probe = 0.0
        self._producer = self._new_producer()
        # Deliveries failing with none acknowledged since: how long this producer has been
        # out of service (tide.kafka.wedge replaces it when Kafka answers meanwhile).
        self._failing_since: float | None = None
        self._wedge = WedgeWatch(client, producer=True)
        # Children of the published counter by (type, topic): `labels()` on every
        # delivery report was a measurable share of a publish (bench/).
        self._published: dict[tuple[str, str], Counter] = {}
        self._closing = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_callbacks, name="kafka-delivery", daemon=True
        )
        self._poller.start()

    def _new_producer(self) -> Producer:
        return Producer(
            {**producer_config(self._client, self.timeout_s), "error_cb": self._on_error}
        )

    def _on_error(self, error: KafkaError) -> None:
        # Served by poll() on the callback thread; librdkafka logs every error itself.
        if error.code() == KafkaError._ALL_BROKERS_DOWN and self._unreachable is None:
            self._unreachable = (f"Kafka unreachable: {error.str()}", time.monotonic())

    def _serve_callbacks(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(0.1)
            self._probe_if_unreachable()
            self._replace_if_wedged()

    def _probe_if_unreachable(self) -> None:
        if self._unreachable is None:
            return
        now = time.monotonic()
        if now - self._last_probe < UNREACHABLE_PROBE_EVERY_S:
            return
        self._last_probe = now
        self._check_reachable(timeout_s=UNREACHABLE_PROBE_EVERY_S)

    def _check_reachable(self, timeout_s: float) -> str | None:
        """Ask Kafka for metadata through this producer; records and returns why it is
        unreachable, or clears that and returns None."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            reason = f"Kafka unreachable: {exc}"
            since = time.monotonic() if self._unreachable is None else self._unreachable[1]
            self._unreachable = (reason, since)
            return reason
        self._unreachable = None
        return None

    def _replace_if_wedged(self) -> None:
        # Known unreachable counts as out of service too: nothing is sent meanwhile, so no
        # delivery fails, and a wedged client would otherwise never be replaced.
        out_since = [t for t in (self._failing_since, self._unreachable_since()) if t is not None]
        failing = min(out_since, default=None)
        if failing is None or not self._wedge.wedged(failing) or self._closing.is_set():
            return
        log.warning(
            "producer: no delivery for %.0f s while Kafka answered for %.0f s: new producer",
            time.monotonic() - failing,
            self._wedge.answered_for(),
        )
        metrics.PRODUCER_REPLACEMENTS.inc()
        wedged = self._producer
        self._producer = self._new_producer()
        self._failing_since = None
        self._unreachable = None
        self._wedge.replaced()
        # Its queued messages time out and report failure (their requests were answered
        # 503, or their records wait in place): someone must serve those reports.
        threading.Thread(
            target=wedged.flush, args=(self.timeout_s + 5,), name="flush-wedged", daemon=True
        ).start()

    def send(self, event: CloudEvent) -> Future[Delivery]:
        """Queue an event; the future completes when the broker acknowledged it (or failed)."""
        done: Future[Delivery] = Future()
        self._produce(event, done.set_result, done.set_exception)
        return done

    def _produce(
        self,
        event: CloudEvent,
        resolve: Callable[[Delivery], object],
        reject: Callable[[PublishError], object],
    ) -> None:
        """Encode and queue an event; its delivery report calls `resolve` or `reject` (on the
        callback thread). Raises PublishError if it cannot be queued."""
        if self._closing.is_set():
            raise NotSentError(f"{event.type} {event.id}: the publisher is closed")
        unreachable = self._unreachable
        if unreachable is not None:
            metrics.PUBLISH_FAILURES.labels(event.type, "unreachable").inc()
            raise NotSentError(f"{event.type} {event.id}: {unreachable[0]}")
        encoded = self.codec.encode(event)

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                metrics.PUBLISH_FAILURES.labels(event.type, error.name()).inc()
                reject(PublishError(f"{event.type} {event.id}: {error.str()}"))
            else:
                self._failing_since = None
                self._unreachable = None
                self._counter(event.type, encoded.topic).inc()
                resolve(
                    Delivery(str(message.topic()), message.partition() or 0, message.offset() or 0)
                )

        try:
            self._producer.produce(
                encoded.topic,
                key=encoded.key,
                value=encoded.value,
                headers=list(encoded.headers),
                on_delivery=on_delivery,
            )
        except BufferError as exc:
            metrics.PUBLISH_FAILURES.labels(event.type, "queue_full").inc()
            raise NotSentError(f"{event.type} {event.id}: local producer queue is full") from exc
        except KafkaException as exc:
            metrics.PUBLISH_FAILURES.labels(event.type, "produce").inc()
            raise PublishError(f"{event.type} {event.id}: {exc}") from exc
        except RuntimeError as exc:  # closed between the check above and here
            raise NotSentError(f"{event.type} {event.id}: the publisher is closed") from exc

    def _counter(self, type_: str, topic: str) -> Counter:
        counter = self._published.get((type_, topic))
        if counter is None:
            counter = self._published[type_, topic] = metrics.PUBLISHED.labels(type_, topic)
        return counter

    def publish(self, event: CloudEvent) -> Delivery:
        """Send and wait for the acknowledgement."""
        return self._acked(event, self.send(event))

    def emit(self, event: CloudEvent) -> Callable[[], Delivery]:
        """Send; the returned call waits for the acknowledgement (tide.sinks.EventSink)."""
        future = self.send(event)
        return lambda: self._acked(event, future)

    def _acked(self, event: CloudEvent, future: Future[Delivery]) -> Delivery:
        try:
            return future.result(timeout=self.timeout_s + 1)
        except TimeoutError as exc:
            metrics.PUBLISH_FAILURES.labels(event.type, "timeout").inc()
            raise PublishError(
                f"{event.type} {event.id}: not acknowledged within {self.timeout_s:.0f}s"
            ) from exc

    async def publish_async(self, event: CloudEvent) -> Delivery:
        """Send and await the acknowledgement. The delivery report completes an asyncio
        future on the caller's loop directly: a concurrent Future wrapped for asyncio cost
        a fifth of an API request (bench/)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Delivery] = loop.create_future()

        def settle(result: Delivery | PublishError) -> None:
            if done.done():
                return  # the caller gave up waiting (timeout or cancellation)
            if isinstance(result, PublishError):
                done.set_exception(result)
            else:
                done.set_result(result)

        def deliver(result: Delivery | PublishError) -> None:
            # On the callback thread; a loop closed while the event was in flight has no one
            # left to tell, and an exception here would stop the callback thread.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result)

        self._produce(event, deliver, deliver)
        try:
            async with asyncio.timeout(self.timeout_s + 1):
                return await done
        except TimeoutError as exc:
            metrics.PUBLISH_FAILURES.labels(event.type, "timeout").inc()
            raise PublishError(
                f"{event.type} {event.id}: not acknowledged within {self.timeout_s:.0f}s"
            ) from exc

    def unready_reason(self) -> str | None:
        """Why this publisher cannot reach Kafka right now, or None when it can. What this
        finds, requests see too: while Kafka is unreachable they are refused at once."""
        if self._closing.is_set():
            return "the publisher is closed"
        return self._check_reachable(timeout_s=2)

    def _unreachable_since(self) -> float | None:
        unreachable = self._unreachable
        return None if unreachable is None else unreachable[1]

    def close(self) -> int:
        """Flush what is queued, then release the client; returns (and logs) how many
        messages were not delivered. Those are dropped, and whoever waits on them is told."""
        if self._closing.is_set():
            return 0
        remaining = int(self._producer.flush(self.timeout_s))
        self._closing.set()
        # The callback thread may be in a wedge probe (tide.kafka.wedge: up to 5 s).
        self._poller.join(timeout=10)
        if remaining:
            log.error("producer closed with %d undelivered messages", remaining)
            # Producer.close() would wait for them up to message.timeout.ms.
            self._producer.purge()
            self._producer.poll(0)  # their failure reports
        # Released here, not when collected: an app's routes can outlive the app (FastAPI
        # caches endpoints' dependencies process-wide), and with them a client that would
        # keep reconnecting to a Kafka long gone.
        self._producer.close()
        return remaining
