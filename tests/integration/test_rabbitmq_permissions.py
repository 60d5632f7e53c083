"""Each service's RabbitMQ user may do what its code does and nothing else, on a real node.

The definitions Tide renders (the document the cluster loads at boot) are imported into the
harness's node for a private copy of the catalog. Each service then connects as its own
user: it publishes to the exchanges it publishes to and consumes its workers' queues, and
the broker refuses everything else with ACCESS_REFUSED (reply code 403).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelAccessRefused
from pamqp.commands import Basic

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.rabbitmq.definitions import definitions
from tide.topology import Catalog
from tide_dev import BrokerSession

pytestmark = pytest.mark.timeout(120)

Step = Callable[[AbstractChannel], Awaitable[object]]


@dataclass(frozen=True)
class Accounts:
    """A private catalog loaded with its users; each service's AMQP URL."""

    catalog: Catalog
    urls: dict[str, str]


@pytest.fixture
def accounts(broker_session: BrokerSession) -> Accounts:
    node = broker_session.own_rabbitmq("this test loads users into it")
    catalog = CATALOG.isolated(unique("perm"))
    services = [s.name for s in catalog.services if catalog.uses_rabbitmq(s.name)]
    passwords = {name: secrets.token_urlsafe(16) for name in services}
    document: dict[str, Any] = definitions(catalog, passwords)
    # The session's node serves the engine and node tiers' stacks too, whose users carry the
    # catalog's service names; this copy's users get names of their own.
    suffix = unique("user")
    for user in document["users"]:
        user["name"] = f"{user['name']}-{suffix}"
    for permission in document["permissions"]:
        permission["user"] = f"{permission['user']}-{suffix}"
    node.import_definitions(document)
    return Accounts(
        catalog,
        {
            name: f"amqp://{name}-{suffix}:{password}@127.0.0.1:{node.port}/"
            for name, password in passwords.items()
        },
    )


def _publish(exchange: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        target = await channel.get_exchange(exchange, ensure=False)
        return await target.publish(aio_pika.Message(b"{}"), routing_key="permissions")

    return step


def _publish_to_queue(queue: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        return await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)

    return step


def _get(queue: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        declared = await channel.declare_queue(queue, passive=True)
        return await declared.get(no_ack=False, fail=False)

    return step


def _declare(queue: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        return await channel.declare_queue(queue, durable=True)

    return step


def _delete(queue: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        return await channel.queue_delete(queue)

    return step


def _bind(queue: str, exchange: str) -> Step:
    async def step(channel: AbstractChannel) -> object:
        declared = await channel.declare_queue(queue, passive=True)
        return await declared.bind(exchange, routing_key="stolen")

    return step


async def _refused(url: str, step: Step) -> bool:
    """Whether the broker refused `step` for this user (it closes the channel with 403)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            outcome = await step(channel)
        except ChannelAccessRefused:
            return True
        # A publish on a confirming channel is done when the broker acks it.
        assert not isinstance(outcome, Basic.Nack), f"the broker nacked: {outcome}"
        return False


async def test_each_service_publishes_and_consumes_only_what_the_catalog_gives_it(
    accounts: Accounts,
) -> None:
    catalog = accounts.catalog
    exchanges = [e.name for e in catalog.exchanges]
    exchanges += [q.dead_letter_exchange for q in catalog.queues]
    queues = [q.name for q in catalog.queues] + [q.dlq for q in catalog.queues]
    unexpected: list[str] = []
    for service, url in sorted(accounts.urls.items()):
        publishes = set(catalog.service(service).publishes_to_exchanges)
        consumes = {w.queue for w in catalog.workers_of(service)}
        allowed = [(f"publish to {x}", _publish(x)) for x in sorted(publishes)]
        allowed += [(f"consume {q}", _get(q)) for q in sorted(consumes)]
        refused = [(f"publish to {x}", _publish(x)) for x in exchanges if x not in publishes]
        refused += [(f"consume {q}", _get(q)) for q in queues if q not in consumes]
        refused += [(f"publish straight to {q}", _publish_to_queue(q)) for q in queues]
        refused += [(f"declare {q}", _declare(q)) for q in (*queues, unique("new-queue"))]
        refused += [(f"delete {q}", _delete(q)) for q in queues]
        refused += [(f"bind {q} to {x}", _bind(q, x)) for q in queues for x in exchanges]
        assert allowed, f"{service} uses RabbitMQ for nothing"
        for what, step in allowed:
            if await _refused(url, step):
                unexpected.append(f"{service} may not {what}, which its code does")
        for what, step in refused:
            if not await _refused(url, step):
                unexpected.append(f"{service} may {what}")
    assert not unexpected, "\n".join(unexpected)
