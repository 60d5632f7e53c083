"""The outbox relay sets aside a row that can never be published and publishes the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer
from prometheus_client import REGISTRY
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from tests.conftest import unique
from tide.cli import app
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher
from tide.store.outbox import OutboxRelay
from tide.topology import Catalog
from tide.waiting import wait_until_async
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(120)


def _payment(subscription_id: str) -> CloudEvent:
    return CloudEvent(
        type="payment.captured",
        source="/test",
        data={
            "subscription_id": subscription_id,
            "user_id": "u1",
            "plan": "basic",
            "amount_cents": 599,
            "currency": "EUR",
        },
    )


def _enqueue(database: str, *events: CloudEvent) -> None:
    with psycopg.connect(database) as conn:
        for event in events:
            envelope: dict[str, Any] = {"attributes": event.attributes(), "data": dict(event.data)}
            conn.execute(
                "INSERT INTO outbox (event_id, type, envelope) VALUES (%s, %s, %s)",
                (event.id, event.type, Jsonb(envelope)),
            )


async def test_a_row_that_is_not_a_valid_event_is_set_aside_and_the_rest_is_published(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    consumer: Callable[..., Consumer],
) -> None:
    poison = _payment("an id with spaces")  # the schema's pattern refuses it, on every attempt
    good = _payment(unique("sub"))
    _enqueue(database, poison, good)
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    relay = OutboxRelay(database, publisher)
    try:
        for event in (poison, good):
            await _relay_until_gone(relay, database, event.id)
    finally:
        await relay.close()
        publisher.close()
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT type, reason FROM outbox_dead_letters WHERE event_id = %s", (poison.id,)
        ).fetchone()
    assert row is not None
    assert row[0] == "payment.captured"
    assert "subscription_id" in row[1]
    topic = str(catalog.event("payment.captured").topic)
    reader = consumer(unique("outbox"))
    reader.subscribe([topic])
    seen: set[str] = set()

    async def published() -> bool:
        for message in reader.consume(50, timeout=0.5):
            if message.error() is None:
                seen.update(v.decode() for k, v in message.headers() or [] if k == "ce_id" and v)
        return good.id in seen

    await wait_until_async(published, deadline_s=60, what="the valid payment on its topic")
    assert poison.id not in seen


async def test_the_age_of_the_oldest_unpublished_row_is_a_metric(
    brokers: Brokers, catalog: Catalog, database: str
) -> None:
    # What TideOutboxStalled watches: a row the relay has not got past ages, and the age
    # falls once it is published.
    stale = _payment(unique("sub"))
    _enqueue(database, stale)
    with psycopg.connect(database) as conn:
        conn.execute(
            "UPDATE outbox SET created_at = now() - interval '10 minutes' WHERE event_id = %s",
            (stale.id,),
        )
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    relay = OutboxRelay(database, publisher)
    try:
        await relay.backlog()
        assert _oldest_age() >= 600

        async def published() -> bool:
            await relay.relay_once()
            await relay.backlog()
            return _oldest_age() < 600

        await wait_until_async(published, deadline_s=60, what="the stale row published")
    finally:
        await relay.close()
        publisher.close()


def _oldest_age() -> float:
    return REGISTRY.get_sample_value("tide_outbox_oldest_age_seconds") or 0.0


async def test_a_set_aside_row_is_listed_and_once_fixed_resent_and_published(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    consumer: Callable[..., Consumer],
) -> None:
    poison = _payment(unique("bad id"))  # a space: the schema's pattern refuses it
    _enqueue(database, poison)
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    relay = OutboxRelay(database, publisher)
    cli, env = CliRunner(), {"TIDE_POSTGRES_DSN": database}
    try:
        await _relay_until_gone(relay, database, poison.id)
        listed = cli.invoke(app, ["outbox", "ls", "--output", "json", "--limit", "1000"], env=env)
        assert listed.exit_code == 0, listed.output
        (row,) = [r for r in json.loads(listed.output) if r["event_id"] == poison.id]
        assert "subscription_id" in row["reason"]
        # The operator fixes the data, then sends the row again.
        fixed = unique("fixed")
        with psycopg.connect(database) as conn:
            conn.execute(
                "UPDATE outbox_dead_letters SET envelope = jsonb_set(envelope,"
                " '{data,subscription_id}', to_jsonb(%s::text)) WHERE id = %s",
                (fixed, row["id"]),
            )
        resent = cli.invoke(app, ["outbox", "resend", str(row["id"])], env=env)
        assert resent.exit_code == 0, resent.output
        assert "1 row(s) back in the outbox" in resent.output
        await _relay_until_gone(relay, database, poison.id)
    finally:
        await relay.close()
        publisher.close()
    with psycopg.connect(database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM outbox_dead_letters WHERE event_id = %s", (poison.id,)
        ).fetchone()
    assert left == (0,), "the fixed row was set aside again"
    reader = consumer(unique("resent"))
    reader.subscribe([str(catalog.event("payment.captured").topic)])
    seen: dict[str, bytes] = {}

    async def published() -> bool:
        for message in reader.consume(50, timeout=0.5):
            headers = dict(message.headers() or [])
            if message.error() is None and headers.get("ce_id") == poison.id.encode():
                seen[poison.id] = message.value() or b""
        return poison.id in seen

    await wait_until_async(published, deadline_s=60, what="the resent payment on its topic")
    assert fixed.encode() in seen[poison.id]


async def _relay_until_gone(relay: OutboxRelay, database: str, event_id: str) -> None:
    async def gone() -> bool:
        await relay.relay_once()
        with psycopg.connect(database) as conn:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE event_id = %s", (event_id,)
            ).fetchone()
        return row == (0,)

    await wait_until_async(gone, deadline_s=60, what=f"{event_id} out of the outbox")


def test_resend_without_ids_or_all_is_refused(database: str) -> None:
    result = CliRunner().invoke(app, ["outbox", "resend"], env={"TIDE_POSTGRES_DSN": database})
    assert result.exit_code == 2
    assert "name row ids or pass --all" in result.output
