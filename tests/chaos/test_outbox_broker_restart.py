"""Restart Kafka while the outbox relay publishes: no committed event is lost, none counts twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import unique
from tests.runtime_fixtures import RunningGroup
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.kafka.producer import EventPublisher
from tide.store.event_store import EventStore
from tide.store.outbox import OutboxRelay
from tide.topology import Autoscaling, Catalog, ConsumerGroup, RetryPolicy
from tide.waiting import wait_until_async
from tide_dev import Brokers
from tide_dev.kafka import KafkaBroker

pytestmark = pytest.mark.timeout(240)
SUBSCRIPTIONS, PAYMENTS = 10, 30


def _payment(subscription: str, n: int) -> CloudEvent:
    return CloudEvent(
        type="payment.captured",
        source="/subscription",
        data={
            "subscription_id": subscription,
            "user_id": "u",
            "plan": "basic",
            "amount_cents": n,
            "currency": "EUR",
        },
    )


def _count_payments(ctx: HandlerContext, event: CloudEvent) -> None:
    ctx.db.execute(
        "INSERT INTO test_payments_seen (consumer, event_id) VALUES (%s, %s)",
        (ctx.consumer, event.id),
    )


async def test_outbox_relay_survives_a_broker_restart_without_loss_or_double_effects(
    brokers: Brokers,
    database: str,
    catalog: Catalog,
    own_kafka: KafkaBroker,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS test_payments_seen (consumer text, event_id text)")
    group = ConsumerGroup(
        name=unique("payments"),
        service="badges",
        topics=(catalog.event("payment.captured").topic,),  # type: ignore[arg-type]
        handler="tests.chaos.test_outbox_broker_restart:_count_payments",
        retry=RetryPolicy(delays_s=(1,)),
        autoscaling=Autoscaling(max_replicas=1),
    )
    run_group(group, lambda event, ctx: _count_payments(ctx, event))

    store = EventStore(database)
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=5
    )
    relay = OutboxRelay(database, publisher, batch=20)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop, idle_s=0.05, backoff_s=0.5))
    appended: list[str] = []

    async def write(subscription: str) -> None:
        conn = await store.connect()
        async with conn:
            for n in range(PAYMENTS):
                event = _payment(subscription, n)
                await store.append_to_stream(
                    conn, subscription, [event], expected_version=n, publish=[event]
                )
                appended.append(event.id)
                await asyncio.sleep(
                    0.01
                )  # pacing the writers across the restart, not synchronisation

    writers = asyncio.gather(*(write(unique("sub")) for _ in range(SUBSCRIPTIONS)))
    # Restart the broker while writes and relaying are under way.
    await wait_until_async(
        lambda: _async_true(len(appended) >= 50), deadline_s=30, what="50 appends"
    )
    await asyncio.to_thread(own_kafka.restart)
    await writers
    total = SUBSCRIPTIONS * PAYMENTS
    await wait_until_async(
        lambda: _async_true(_seen(database, group.name) >= total),
        deadline_s=120,
        what=f"{total} payments consumed",
    )
    stop.set()
    await relaying
    assert publisher.close() == 0
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT event_id, count(*) FROM test_payments_seen WHERE consumer = %s GROUP BY 1",
            (group.name,),
        ).fetchall()
        backlog = conn.execute(
            "SELECT count(*) FROM outbox WHERE event_id = ANY(%s::uuid[])", (appended,)
        ).fetchone()
    seen = dict(rows)
    assert set(seen) == set(appended), "every committed payment reached the consumer"
    assert set(seen.values()) == {1}, "no payment had a second effect"
    assert backlog == (0,)
    print(f"\nchaos: Kafka restarted under {total} outbox writes; {len(seen)} consumed once each")


async def _async_true(value: bool) -> bool:
    return value


def _seen(database: str, consumer: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT event_id) FROM test_payments_seen WHERE consumer = %s",
            (consumer,),
        ).fetchone()
    return int(row[0]) if row else 0
