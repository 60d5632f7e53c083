"""The RabbitMQ bus on a real node with the catalog's topology: confirms, delivery limit, DLQ."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import psycopg
import pytest

from tests.conftest import unique
from tests.runtime_fixtures import queue_consumer
from tide.codecs.json_schema import EventCodec
from tide.errors import TransientError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.rabbitmq.bus import RabbitPublisher
from tide.topology import Catalog
from tide.waiting import wait_until_async
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(120)


def job(user: str) -> CloudEvent:
    return CloudEvent(
        type="notification.requested",
        source="/test",
        data={"user_id": user, "channel": "push", "title": "hi", "video_ids": ["v1"]},
    )


async def _start_worker(
    brokers: Brokers, database: str, catalog: Catalog, handler: Handler
) -> AsyncIterator[None]:
    consumer = queue_consumer(brokers, database, catalog, handler)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    yield
    stop.set()
    await task


async def _dead_letters(
    brokers: Brokers, queue: str, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect_robust(brokers.rabbitmq_url)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(queue, ensure=False)

        async def arrived() -> bool:
            message = await dlq.get(fail=False, no_ack=True)
            if message is not None:
                got.append(message)
            return len(got) >= count

        await wait_until_async(arrived, deadline_s=60, what=f"{count} messages on {queue}")
    return got


def _sent(database: str, users: list[str]) -> Counter[str]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT user_id FROM notifications_sent WHERE user_id = ANY(%s)", (users,)
        )
        return Counter(row[0] for row in rows)


def recording(fail_for: set[str], attempts: Counter[str]) -> Handler:
    def handle(event: CloudEvent, ctx: HandlerContext) -> None:
        attempts[event.data["user_id"]] += 1
        if event.data["user_id"] in fail_for:
            raise TransientError("push gateway down")
        ctx.db.execute(
            "INSERT INTO notifications_sent (event_id, user_id, channel, title)"
            " VALUES (%s, %s, %s, %s)",
            (event.id, event.data["user_id"], event.data["channel"], event.data["title"]),
        )

    return handle


async def test_confirmed_jobs_are_done_once_and_failing_ones_dead_letter_at_the_delivery_limit(
    brokers: Brokers, database: str, rabbit_catalog: Catalog
) -> None:
    catalog = rabbit_catalog
    (queue,) = catalog.queues
    doomed = unique("doomed")
    users = [unique("u") for _ in range(10)]
    attempts: Counter[str] = Counter()
    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(catalog))
    worker = _start_worker(brokers, database, catalog, recording({doomed}, attempts))
    await anext(worker)
    try:
        for user in [*users, doomed]:
            await publisher.publish(job(user))  # returns once the broker confirmed
        await wait_until_async(
            lambda: _true(_sent(database, users) == Counter(users)),
            deadline_s=60,
            what="every job sent",
        )
        (dead,) = await _dead_letters(brokers, queue.dlq, 1)
    finally:
        await publisher.close()
        with pytest.raises(StopAsyncIteration):
            await anext(worker)
    assert dead.message_id is not None
    assert dead.headers["cloudEvents_type"] == "notification.requested"
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index]
    assert attempts[doomed] > queue.delivery_limit
    assert _sent(database, [doomed]) == Counter()


async def test_poison_body_is_rejected_to_the_dlq_and_never_retried(
    brokers: Brokers, database: str, rabbit_catalog: Catalog
) -> None:
    catalog = rabbit_catalog
    (queue,) = catalog.queues
    (exchange,) = catalog.exchanges
    attempts: Counter[str] = Counter()
    worker = _start_worker(brokers, database, catalog, recording(set(), attempts))
    await anext(worker)
    connection = await aio_pika.connect_robust(brokers.rabbitmq_url)
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            target = await channel.get_exchange(exchange.name, ensure=False)
            await target.publish(
                aio_pika.Message(b"{broken", message_id="poison-1"), routing_key="notify.x"
            )
        (dead,) = await _dead_letters(brokers, queue.dlq, 1)
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(worker)
    assert dead.body == b"{broken"
    assert dead.headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]
    assert sum(attempts.values()) == 0


async def test_unroutable_job_is_an_error_not_a_silent_drop(
    brokers: Brokers, rabbit_catalog: Catalog
) -> None:
    catalog = rabbit_catalog.model_copy(
        update={
            "events": tuple(
                e.model_copy(update={"routing_key": "nobody.listens"}) if e.exchange else e
                for e in rabbit_catalog.events
            )
        }
    )
    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(catalog))
    try:
        with pytest.raises(Exception, match=r"notification\.requested"):
            await publisher.publish(job("u"))
    finally:
        await publisher.close()


async def _true(value: bool) -> bool:
    return value
