"""Restart RabbitMQ with confirmed jobs queued: the worker reconnects and does each job once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.conftest import unique
from tests.runtime_fixtures import queue_consumer
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext
from tide.rabbitmq.bus import STOP_BOUND_S, RabbitPublisher
from tide.topology import Catalog
from tide.waiting import wait_until_async
from tide_dev import Brokers, BrokerSession
from tide_dev.rabbitmq import RabbitMQServer

pytestmark = pytest.mark.timeout(240)
JOBS = 40


def _job(user: str) -> CloudEvent:
    return CloudEvent(
        type="notification.requested",
        source="/test",
        data={"user_id": user, "channel": "email", "title": "t", "video_ids": ["v"]},
    )


def _sent(database: str, users: list[str]) -> dict[str, int]:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT user_id, count(*) FROM notifications_sent WHERE user_id = ANY(%s) GROUP BY 1",
            (users,),
        ).fetchall()
    return {user: int(count) for user, count in rows}


@pytest.fixture
def node(broker_session: BrokerSession) -> RabbitMQServer:
    """The harness's own RabbitMQ node, which these tests stop and restart."""
    return broker_session.own_rabbitmq("needs the harness's node to stop and start it")


def _run_worker(
    brokers: Brokers, database: str, catalog: Catalog
) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    consumer = queue_consumer(brokers, database, catalog, _deliver)
    return stop, asyncio.create_task(consumer.run(stop))


async def test_confirmed_jobs_survive_a_broker_restart_and_run_exactly_once(
    brokers: Brokers, node: RabbitMQServer, database: str, rabbit_catalog: Catalog
) -> None:
    users = [unique("r") for _ in range(JOBS)]
    # The worker runs before, through and after the restart.
    stop, running = _run_worker(brokers, database, rabbit_catalog)
    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(rabbit_catalog))
    for user in users[: JOBS // 2]:
        await publisher.publish(_job(user))  # confirmed: on disk in a quorum queue
    await publisher.close()

    await asyncio.to_thread(node.restart)
    print("\nchaos: RabbitMQ restarted under a running worker after", JOBS // 2, "confirmed jobs")

    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(rabbit_catalog))
    for user in users[JOBS // 2 :]:
        await publisher.publish(_job(user))
    await publisher.close()

    async def all_sent() -> bool:
        return len(await asyncio.to_thread(_sent, database, users)) == JOBS

    await wait_until_async(all_sent, deadline_s=90, what=f"{JOBS} jobs delivered")
    stop.set()
    await running
    counts = _sent(database, users)
    assert set(counts) == set(users), "no confirmed job was lost in the restart"
    assert set(counts.values()) == {1}, "no job ran twice"
    print(f"chaos: verdict ok, {JOBS} jobs delivered once each")


def _deliver(event: CloudEvent, ctx: HandlerContext) -> None:
    ctx.db.execute(
        "INSERT INTO notifications_sent (event_id, user_id, channel, title)"
        " VALUES (%s, %s, %s, %s)",
        (event.id, event.data["user_id"], event.data["channel"], event.data["title"]),
    )


async def test_a_worker_told_to_stop_stops_while_rabbitmq_is_gone(
    brokers: Brokers, node: RabbitMQServer, database: str, rabbit_catalog: Catalog
) -> None:
    # A robust channel that has lost its broker cannot cancel its consumer until the broker
    # is back: a stop then waited for RabbitMQ (or, on Kubernetes, for the SIGKILL, exit 137).
    stop, running = _run_worker(brokers, database, rabbit_catalog)
    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(rabbit_catalog))
    user = unique("gone")
    await publisher.publish(_job(user))
    await publisher.close()
    await wait_until_async(
        lambda: asyncio.to_thread(lambda: _sent(database, [user]) == {user: 1}),
        deadline_s=60,
        what="the worker consuming",
    )
    await asyncio.to_thread(node.stop)
    try:
        stop.set()
        began = asyncio.get_running_loop().time()
        await asyncio.wait_for(running, timeout=STOP_BOUND_S + 15)
        took = asyncio.get_running_loop().time() - began
        assert took <= STOP_BOUND_S, f"the stop took {took:.0f} s, bound {STOP_BOUND_S:.0f} s"
    finally:
        await asyncio.to_thread(node.start)
