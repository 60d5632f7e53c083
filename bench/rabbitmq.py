"""RabbitMQ: Tide's publisher (schema check, CloudEvents headers, persistent, mandatory, waits
for the confirm) against bare aio-pika publishing the same body the same way, and against
FastStream's RabbitBroker publishing the same events with the same guarantees, all to the
same exchange and quorum queue. One message in flight per publisher, as a handler publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika

from bench import peers
from bench.measure import Mode, Row, interleaved, timed
from bench.same_work import Headers
from bench.setting import Setting
from tide.events.envelope import CloudEvent
from tide.rabbitmq.bus import RabbitPublisher

TARGET = 0.8
TARGET_PEER = 1.0  # Tide against FastStream
OURS = "RabbitPublisher.publish: schema check, headers, confirm"
EVENT = "notification.requested"


def _events(count: int) -> list[CloudEvent]:
    return [
        CloudEvent(
            type=EVENT,
            source="/bench",
            data={
                "user_id": f"user-{n % 1000}",
                "channel": "push",
                "title": "New for you",
                "video_ids": ["v1", "v2", "v3"],
            },
        )
        for n in range(count)
    ]


async def _declare(url: str, exchange: str, queue: str) -> None:
    """The exchange the catalog names and one quorum queue bound to everything on it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        bound = await channel.declare_queue(
            queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await bound.bind(declared, routing_key="#")
        await bound.purge()


def tide(setting: Setting, events: list[CloudEvent]) -> Callable[[], None]:
    async def publish_all() -> None:
        publisher = RabbitPublisher(setting.rabbitmq_url, setting.codec)
        await publisher.connect()
        for event in events:
            await publisher.publish(event)
        await publisher.close()

    return lambda: asyncio.run(publish_all())


def bare(setting: Setting, exchange: str, events: list[CloudEvent]) -> Callable[[], None]:
    bodies = [setting.codec.encode_amqp(e)[0] for e in events]

    async def publish_all() -> None:
        connection = await aio_pika.connect_robust(setting.rabbitmq_url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(exchange, ensure=False)
        for body in bodies:
            await target.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="notify.bench",
                mandatory=True,
            )
        await connection.close()

    return lambda: asyncio.run(publish_all())


def faststream(setting: Setting, exchange: str, events: list[CloudEvent]) -> Callable[[], None]:
    """FastStream's RabbitBroker with the routing key and CloudEvents headers Tide uses."""
    routing_key = str(setting.catalog.event(EVENT).routing_key)
    headers = Headers.amqp(setting.codec, events[0])
    return peers.rabbit_publisher(setting.rabbitmq_url, exchange, routing_key, headers, events)


def measure(setting: Setting, mode: Mode) -> list[Row]:
    exchange = str(setting.catalog.event(EVENT).exchange)
    queue = f"{exchange}.bench"
    count = 2_000 * mode.scale
    events = _events(count)
    asyncio.run(_declare(setting.rabbitmq_url, exchange, queue))
    result = interleaved(
        {
            "bare": timed(count, bare(setting, exchange, events)),
            "tide": timed(count, tide(setting, events)),
            "faststream": timed(count, faststream(setting, exchange, events)),
        },
        mode,
    )
    ours = result.spread("tide").median
    return [
        Row(
            path="RabbitMQ",
            case="confirmed publish",
            ours=OURS,
            baseline="bare aio-pika publish of the encoded body: persistent, mandatory, "
            "each confirm awaited (no headers, no schema check)",
            ratio=result.ratio("tide", "bare"),
            target=TARGET,
            ours_rate=ours,
            baseline_rate=result.spread("bare").median,
        ),
        Row(
            path="RabbitMQ",
            case="confirmed publish, vs FastStream",
            ours=OURS,
            baseline=f"{peers.FASTSTREAM} RabbitBroker.publish: publisher confirms (a channel "
            "that raises on a returned message), persist=True, mandatory=True, the same "
            "exchange, routing key and CloudEvents headers, each confirm awaited (no schema "
            "check)",
            ratio=result.ratio("tide", "faststream"),
            target=TARGET_PEER,
            ours_rate=ours,
            baseline_rate=result.spread("faststream").median,
        ),
    ]
