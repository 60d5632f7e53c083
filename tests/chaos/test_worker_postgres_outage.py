"""Stop PostgreSQL under the RabbitMQ worker (#15.5): jobs wait unacked instead of spending
their delivery limit; none reaches the DLQ, and once PostgreSQL is back each is done once.

The old worker nacked a job on every failed attempt, so an outage longer than its
delivery limit's worth of attempts dead-lettered valid jobs.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import aio_pika
import pytest

from ott.catalog import CATALOG
from tests.conftest import unique
from tests.integration.test_rabbitmq_bus import _sent, _start_worker, _true, job, recording
from tide.codecs.json_schema import EventCodec
from tide.rabbitmq.bus import RabbitPublisher
from tide.rabbitmq.definitions import definitions
from tide.topology import Catalog
from tide.waiting import wait_until_async
from tide_dev import Brokers, BrokerSession, HarnessError

pytestmark = pytest.mark.timeout(240)
# Down longer than the old worker took to spend a delivery limit of 1: a first attempt on
# the broken pooled connection, then one psycopg_pool timeout (30 s).
OUTAGE_S = 40


@pytest.fixture
def strict_catalog(broker_session: BrokerSession) -> Catalog:
    """The catalog with its queue's delivery limit at 1, loaded into the harness's node."""
    isolated = CATALOG.isolated(unique("q"))
    strict = isolated.model_copy(
        update={
            "queues": tuple(q.model_copy(update={"delivery_limit": 1}) for q in isolated.queues)
        }
    )
    node = broker_session.own_rabbitmq("loads a topology into the harness's own node")
    node.import_definitions(definitions(strict))
    return strict


async def _depth(brokers: Brokers, queue: str) -> int:
    connection = await aio_pika.connect_robust(brokers.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_a_database_outage_under_the_worker_dead_letters_nothing(
    brokers: Brokers, broker_session: BrokerSession, database: str, strict_catalog: Catalog
) -> None:
    postgres = broker_session.postgres
    if postgres is None:
        raise HarnessError(
            "PostgreSQL",
            reason="needs the harness's server to stop it",
            fix="unset TIDE_POSTGRES_DSN",
        )
    catalog = strict_catalog
    (queue,) = catalog.queues
    attempts: Counter[str] = Counter()
    users = [unique("u") for _ in range(5)]
    publisher = RabbitPublisher(brokers.rabbitmq_url, EventCodec(catalog))
    worker = _start_worker(brokers, database, catalog, recording(set(), attempts))
    await anext(worker)
    try:
        first = unique("first")
        await publisher.publish(job(first))
        await wait_until_async(
            lambda: _true(_sent(database, [first]) == Counter([first])),
            deadline_s=60,
            what="a job done before the outage",
        )
        postgres.stop()
        try:
            for user in users:
                await publisher.publish(job(user))
            await _outage(OUTAGE_S)
            assert await _depth(brokers, queue.dlq) == 0, "a valid job was dead-lettered"
        finally:
            postgres.start()
        await wait_until_async(
            lambda: _true(_sent(database, users) == Counter(users)),
            deadline_s=120,
            what="every job done once PostgreSQL is back",
        )
    finally:
        await publisher.close()
        with pytest.raises(StopAsyncIteration):
            await anext(worker)
    assert await _depth(brokers, queue.dlq) == 0
    assert _sent(database, users) == Counter(users), "each job done exactly once"


async def _outage(seconds: float) -> None:
    """Keep PostgreSQL down this long: the length of the fault, not a synchronization."""
    await asyncio.sleep(seconds)
