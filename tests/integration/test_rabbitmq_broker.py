"""The harness's RabbitMQ is a real broker: confirms, acks, and dead-lettering work."""

from __future__ import annotations

import shutil
import socket

import aio_pika
import pytest
from pamqp.commands import Basic

from tests.conftest import unique
from tide.waiting import wait_until_async
from tide_dev import Brokers
from tide_dev.brokers import broker_dir
from tide_dev.process import port_is_open
from tide_dev.rabbitmq import RabbitMQServer

pytestmark = pytest.mark.timeout(60)


async def test_confirmed_message_is_consumed_and_acked(brokers: Brokers) -> None:
    connection = await aio_pika.connect_robust(brokers.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            unique("smoke"), arguments={"x-queue-type": "quorum"}, durable=True
        )
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(b"job-1", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )
        assert isinstance(confirmation, Basic.Ack)  # the broker confirmed the write

        message = await _get(queue)
        assert message.body == b"job-1"
        await message.ack()
        await _wait_for_depth(queue, 0)
        await queue.delete(if_unused=False, if_empty=False)


async def test_rejected_message_is_routed_to_the_dead_letter_queue(brokers: Brokers) -> None:
    connection = await aio_pika.connect_robust(brokers.rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        name = unique("work")
        dlx = await channel.declare_exchange(
            f"{name}.dlx", aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await channel.declare_queue(
            f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx)
        work = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": dlx.name},
        )
        await channel.default_exchange.publish(aio_pika.Message(b"poison"), routing_key=name)

        message = await _get(work)
        await message.reject(requeue=False)

        dead_letter = await _get(dead)
        assert dead_letter.body == b"poison"
        death = dead_letter.headers["x-death"]
        assert isinstance(death, list)
        assert death[0]["queue"] == name
        assert death[0]["reason"] == "rejected"
        await dead_letter.ack()
        await work.delete(if_unused=False, if_empty=False)
        await dead.delete(if_unused=False, if_empty=False)
        await dlx.delete()


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    got: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(fail=False, no_ack=False)
        if message is not None:
            got.append(message)
        return bool(got)

    await wait_until_async(arrived, deadline_s=20, what=f"a message on {queue.name}")
    return got[0]


async def _wait_for_depth(queue: aio_pika.abc.AbstractQueue, depth: int) -> None:
    async def reached() -> bool:
        return (await queue.declare()).message_count == depth

    await wait_until_async(reached, deadline_s=20, what=f"{queue.name} holding {depth} messages")


@pytest.mark.parametrize("side", ["metrics_port", "dist_port"])
def test_a_side_port_taken_before_the_node_binds_it_moves(side: str) -> None:
    # Servers pick their ports before they bind them; another process may bind one
    # first. A node that lost only a side port (its /metrics, or Erlang distribution's,
    # which fails before the node's own log exists) must still come up for its clients.
    root = broker_dir()  # the node runs as its own user, which pytest's tmp_path shuts out
    server = RabbitMQServer(root / "rabbitmq")
    taken = getattr(server, side)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("0.0.0.0", taken))
        squatter.listen()
        try:
            server.start()
            assert getattr(server, side) != taken
            assert port_is_open(getattr(server, side))  # the moved port is served
        finally:
            server.close()
            shutil.rmtree(root, ignore_errors=True)
