"""FastStream, the peer framework, as paths for bench/measure.py: its Kafka subscribers and
publisher on both of its Kafka backends (aiokafka and confluent-kafka) and its RabbitMQ
publisher, each given the guarantees Tide's path gives and nothing more.

Every broker is made, started and stopped inside its path. FastStream's access log (a line
per message at INFO) is off (`logger=None`): Tide's runners log nothing per record, and a
log line is not what either side is measured for. Subscribers are timed like Tide's runners
(bench/clock.py), each run a fresh consumer group reading the topic from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any, Literal, cast

from aiormq.abc import FieldValue
from faststream import AckPolicy
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.kafka import KafkaBroker as AiokafkaBroker
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange
from faststream.rabbit.schemas import Channel

from bench.clock import Clock
from bench.measure import Path
from bench.same_work import Headers
from tide.events.envelope import CloudEvent

FASTSTREAM = f"FastStream {version('faststream')}"
Backend = Literal["aiokafka", "confluent"]
BACKENDS: tuple[Backend, ...] = ("aiokafka", "confluent")
BATCH = 100  # records per batch: what Tide's runners take per poll
_WAIT_S = 300  # a subscriber that stalls fails the run instead of hanging the bench

# Tide's producer settings (tide.kafka.producer.producer_config), as FastStream takes them.
PRODUCER = "enable_idempotence=True, acks=all, lz4, linger 5 ms"


def _kafka(backend: Backend, bootstrap: str) -> AiokafkaBroker | ConfluentBroker:
    """A broker whose producer has Tide's settings; its subscribers bring their own."""
    kind = AiokafkaBroker if backend == "aiokafka" else ConfluentBroker
    return kind(
        bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="lz4",
        linger_ms=5,
        logger=None,
    )


class _Finish:
    """A Clock whose last record wakes the coroutine waiting for it."""

    def __init__(self, records: int) -> None:
        # Handlers run on the loop with both backends; call_soon_threadsafe is right even
        # if a backend ever calls back from its consumer thread.
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(self.done.set)

        self.clock = Clock(records, wake)

    async def timed(self, broker: AiokafkaBroker | ConfluentBroker) -> float:
        """Start the broker, wait for the last record, stop it; the rate is the clock's."""
        await broker.start()
        try:
            await asyncio.wait_for(self.done.wait(), timeout=_WAIT_S)
        finally:
            await broker.stop()
        return self.clock.rate


def subscriber(
    bootstrap: str, topic: str, groups: Callable[[], str], records: int, backend: Backend
) -> Path:
    """FastStream's per-message subscriber. `AckPolicy.ACK` commits the offset after each
    message's handler: aiokafka awaits the commit, confluent commits asynchronously on
    FastStream's consumer thread. The handler takes the body FastStream decoded from JSON
    (`dict[str, Any]`, through FastStream's own argument validation) and does nothing else:
    no schema check, no marks."""

    async def consume() -> float:
        broker = _kafka(backend, bootstrap)
        finish = _Finish(records)

        async def handle(body: dict[str, Any]) -> None:
            finish.clock.tick()

        broker.subscriber(
            topic, group_id=groups(), auto_offset_reset="earliest", ack_policy=AckPolicy.ACK
        )(handle)
        return await finish.timed(broker)

    return lambda: asyncio.run(consume())


def batch_subscriber(bootstrap: str, topic: str, groups: Callable[[], str], records: int) -> Path:
    """FastStream's batch subscriber on aiokafka: up to 100 records a call (`batch=True,
    max_records=100`); `AckPolicy.ACK` commits once per batch, after the handler (awaited).
    The handler takes the bodies FastStream decoded from JSON and does nothing else."""

    async def consume() -> float:
        broker = _kafka("aiokafka", bootstrap)
        finish = _Finish(records)

        async def handle(bodies: list[dict[str, Any]]) -> None:
            for _body in bodies:
                finish.clock.tick()

        broker.subscriber(
            topic,
            group_id=groups(),
            auto_offset_reset="earliest",
            batch=True,
            max_records=BATCH,
            ack_policy=AckPolicy.ACK,
        )(handle)
        return await finish.timed(broker)

    return lambda: asyncio.run(consume())


def publisher(
    bootstrap: str,
    topic: str,
    events: Sequence[CloudEvent],
    *,
    key: str,
    headers: Headers,
    backend: Backend,
) -> Callable[[], None]:
    """FastStream's publish of each event's data (FastStream serializes it to JSON), keyed
    by the same field as Tide and with Tide's CloudEvents headers built per event, by a
    producer with Tide's settings (PRODUCER). Pipelined: every publish is queued without
    waiting (`no_confirm=True`), then every delivery is awaited. No schema check."""

    async def publish_all() -> None:
        broker = _kafka(backend, bootstrap)
        await broker.connect()
        try:
            pending = [
                await broker.publish(
                    dict(event.data),
                    topic,
                    key=str(event.data[key]).encode(),
                    headers=headers.text(event),
                    no_confirm=True,
                )
                for event in events
            ]
            await asyncio.gather(*pending)
        finally:
            await broker.stop()

    return lambda: asyncio.run(publish_all())


def rabbit_publisher(
    url: str, exchange: str, routing_key: str, headers: Headers, events: Sequence[CloudEvent]
) -> Callable[[], None]:
    """FastStream's RabbitBroker.publish of each event's data (serialized by FastStream) with
    Tide's CloudEvents headers, message id and correlation id: persistent (`persist=True`),
    `mandatory=True` on a channel with publisher confirms that raises on a returned message
    (as Tide's does), each confirm awaited before the next publish (one in flight, as a
    handler publishes). The exchange is the catalog's, declared by the bench. No schema
    check."""

    async def publish_all() -> None:
        broker = RabbitBroker(
            url,
            default_channel=Channel(publisher_confirms=True, on_return_raises=True),
            logger=None,
        )
        target = RabbitExchange(exchange, type=ExchangeType.TOPIC, durable=True, declare=False)
        await broker.connect()
        try:
            for event in events:
                await broker.publish(
                    dict(event.data),
                    exchange=target,
                    routing_key=routing_key,
                    persist=True,
                    mandatory=True,
                    # Text values are AMQP field values; the cast only widens the type.
                    headers=cast("dict[str, FieldValue]", headers.text(event)),
                    message_id=event.id,
                    correlation_id=event.correlationid,
                )
        finally:
            await broker.stop()

    return lambda: asyncio.run(publish_all())
