"""The RabbitMQ side: publishing with confirms, and competing consumers with dead-lettering.

The topology itself (exchanges, quorum queues, DLX and delivery-limit policies)
is declared by the catalog's definitions (`tide.rabbitmq.definitions`), never
here: a queue's arguments cannot change once declared.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
import psycopg
from aio_pika.abc import AbstractIncomingMessage
from psycopg_pool import ConnectionPool

from tide.codecs.json_schema import EventCodec, UndecodableRecordError
from tide.errors import (
    CONNECT_TIMEOUT_S,
    MAX_UNAVAILABLE_BACKOFF_S,
    PLATFORM_ERRORS,
    UNAVAILABLE_BACKOFF_S,
    PermanentError,
    PlatformUnavailableError,
    pg_conninfo,
)
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.observability import correlation
from tide.store.processed import handle_once
from tide.topology import QueueWorker

log = logging.getLogger(__name__)

# Each step of a worker's stop (cancel its consumer, close its connection) waits this long
# for RabbitMQ; the whole stop ends within STOP_BOUND_S, inside the chart's grace period.
STOP_WAIT_S = 10.0
STOP_BOUND_S = 2 * STOP_WAIT_S + 5


class RabbitPublishError(RuntimeError):
    """RabbitMQ refused a message: nacked, or unroutable (a topology problem)."""


class RabbitUnavailableError(PlatformUnavailableError):
    """RabbitMQ could not be reached or did not confirm in time; the message may be lost."""


class QueueMissingError(RuntimeError):
    """A worker's queue is not declared: the topology (definitions) was never loaded, or
    names another queue. Configuration that can never work by itself (exit 3)."""


def broker_address(url: str) -> str:
    """Where an AMQP URL points, without its credentials: what an error names."""
    parsed = urlsplit(url)
    return f"{parsed.hostname or 'localhost'}:{parsed.port or 5672}{parsed.path or '/'}"


def unready_reason(url: str, timeout_s: float = 2.0) -> str | None:
    """Why RabbitMQ at `url` does not take a connection now, or None (a readiness check;
    blocking, so it runs off the event loop)."""

    async def connect() -> None:
        connection = await aio_pika.connect(url, timeout=timeout_s)
        await connection.close()

    try:
        asyncio.run(connect())
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        return f"RabbitMQ unreachable at {broker_address(url)}: {exc}"
    return None


class RabbitPublisher:
    """Publishes catalog events to their exchange; returns once the broker confirmed."""

    def __init__(self, url: str, codec: EventCodec, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.codec = codec
        self.timeout_s = timeout_s
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    async def connect(self) -> None:
        self._exchanges = {}
        self._connection = await aio_pika.connect_robust(self.url, timeout=self.timeout_s)
        # Unroutable mandatory messages raise instead of vanishing.
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    async def publish(self, event: CloudEvent) -> None:
        if self._channel is None:
            try:
                await self.connect()
            except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
                raise RabbitUnavailableError(f"RabbitMQ unreachable: {exc!r}") from exc
        assert self._channel is not None
        body, headers = self.codec.encode_amqp(event)  # validates
        event_type = self.codec.event_type(event.type)
        message = aio_pika.Message(
            body,
            headers=dict(headers),
            message_id=event.id,
            correlation_id=event.correlationid,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            name = str(event_type.exchange)
            exchange = self._exchanges.get(name)
            if exchange is None:
                exchange = await self._channel.get_exchange(name, ensure=False)
                self._exchanges[name] = exchange
            await exchange.publish(
                message, routing_key=event_type.routing_key, mandatory=True, timeout=self.timeout_s
            )
        except aio_pika.exceptions.DeliveryError as exc:
            raise RabbitPublishError(f"{event.type} {event.id}: {exc!r}") from exc
        except (
            aio_pika.exceptions.AMQPError,
            aio_pika.exceptions.ChannelInvalidStateError,
            OSError,
            TimeoutError,
        ) as exc:
            # A robust connection reconnects by itself; until then the broker is away.
            raise RabbitUnavailableError(f"{event.type} {event.id}: {exc!r}") from exc

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


class BlockingRabbitPublisher:
    """RabbitPublisher for synchronous callers (the Kafka runner): its own loop in a thread."""

    def __init__(self, url: str, codec: EventCodec, *, timeout_s: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqp", daemon=True)
        self._thread.start()
        self._publisher = RabbitPublisher(url, codec, timeout_s=timeout_s)
        self._timeout_s = timeout_s

    def publish(self, event: CloudEvent) -> None:
        self.emit(event)()

    def emit(self, event: CloudEvent) -> Callable[[], None]:
        """Publish on the loop's thread without waiting; the returned call waits for the
        confirm. Publishes in flight together share the channel: one confirm round trip for
        a batch instead of one per job (half of a publishing group's time, bench/)."""
        future: Future[None] = asyncio.run_coroutine_threadsafe(
            self._publisher.publish(event), self._loop
        )

        def confirmed() -> None:
            try:
                future.result(timeout=self._timeout_s * 2)
            except TimeoutError as exc:
                future.cancel()
                raise RabbitUnavailableError(
                    f"{event.type} {event.id}: no confirm in time"
                ) from exc

        return confirmed

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._publisher.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class QueueConsumer:
    """Competing consumers of one quorum queue: ack when done, requeue transient failures
    (the queue's delivery limit then dead-letters), reject poison straight to `<queue>.dlq`."""

    def __init__(
        self,
        worker: QueueWorker,
        handler: Handler,
        codec: EventCodec,
        *,
        rabbitmq_url: str,
        postgres_dsn: str,
        source: str,
    ) -> None:
        self.worker = worker
        self.handler = handler
        self.codec = codec
        self.rabbitmq_url = rabbitmq_url
        self.postgres_dsn = postgres_dsn
        self.source = source
        # Up to `prefetch` messages are handled at once, each on its own connection.
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            pg_conninfo(postgres_dsn),
            min_size=1,
            max_size=worker.prefetch,
            kwargs={"autocommit": True},
            # A handler waits this long for a connection, then the outage wait takes over.
            timeout=CONNECT_TIMEOUT_S,
            open=False,
        )

    def _handle_once(self, event: CloudEvent) -> bool:
        def no_follow_ups(caused: CloudEvent) -> None:
            raise PermanentError(f"queue workers emit nothing; got {caused.type}")

        with self._pool.connection() as db:
            context = HandlerContext(db=db, consumer=self.worker.queue, source=self.source)
            return handle_once(db, context, self.handler, event, no_follow_ups)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = self.codec.decode_amqp(message.body, dict(message.headers))
        except UndecodableRecordError as error:
            log.warning("%s: poison message %s: %s", self.worker.queue, message.message_id, error)
            await message.reject(requeue=False)
            return
        with correlation(event.correlationid):
            try:
                await self._handle_waiting_out_outages(event)
            except PermanentError as error:
                log.warning("%s: permanent failure of %s: %s", self.worker.queue, event.id, error)
                await message.reject(requeue=False)
            except Exception as error:  # noqa: BLE001 - requeue; the delivery limit bounds it
                log.warning("%s: failure of %s: %r", self.worker.queue, event.id, error)
                await message.nack(requeue=True)
            else:
                await message.ack()

    async def _handle_waiting_out_outages(self, event: CloudEvent) -> None:
        """Handle `event`; while PostgreSQL is unreachable the message stays unacked and the
        attempt is repeated after a backoff. A nack would spend the queue's delivery limit,
        which is for the message's own failures, and a long outage would dead-letter valid
        jobs (issue #15.5)."""
        backoff = UNAVAILABLE_BACKOFF_S
        while True:
            try:
                await asyncio.to_thread(self._handle_once, event)
                return
            except PLATFORM_ERRORS as error:
                log.error(
                    "%s: platform unavailable at %s, waiting %.0f s: %s",
                    self.worker.queue,
                    event.id,
                    backoff,
                    error,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_UNAVAILABLE_BACKOFF_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; reconnects (connect_robust) after a broker restart."""
        await asyncio.to_thread(self._pool.open)
        where = broker_address(self.rabbitmq_url)
        try:
            connection = await aio_pika.connect_robust(self.rabbitmq_url)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            raise RabbitUnavailableError(f"RabbitMQ at {where}: {exc}") from exc
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.worker.prefetch)
            # Passive: the queue's arguments belong to the topology (definitions); a
            # robust channel re-runs this same passive declare when it reconnects.
            try:
                queue = await channel.declare_queue(self.worker.queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise QueueMissingError(
                    f"queue {self.worker.queue!r} is not declared on RabbitMQ at {where}: load"
                    " the catalog's topology (`tide rabbitmq definitions`)"
                ) from None
            tag = await queue.consume(self._on_message)
            log.info("worker consuming %s", self.worker.queue)
            await stop.wait()
            await self._within_stop_wait(queue.cancel(tag), f"cancel the consumer at {where}")
        finally:
            await self._within_stop_wait(connection.close(), f"close the connection to {where}")
        await asyncio.to_thread(self._pool.close)

    async def _within_stop_wait(self, step: Awaitable[object], what: str) -> None:
        # A robust connection that has lost its broker (down, or refusing a rotated
        # password) waits for it to come back before it can cancel or close cleanly. A stop
        # does not wait for that: deliveries not acked go back to the queue anyway.
        try:
            await asyncio.wait_for(step, STOP_WAIT_S)
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
            log.warning(
                "worker %s: could not %s within %.0f s (%s); stopping without it",
                self.worker.queue,
                what,
                STOP_WAIT_S,
                exc or type(exc).__name__,
            )
