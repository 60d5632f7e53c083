"""The event store on real PostgreSQL: optimistic concurrency, ordered reads, snapshots, outbox."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.conftest import unique
from tide.events.envelope import CloudEvent
from tide.store.event_store import ConcurrencyError, EventStore, Snapshot
from tide.store.migrations import migrate

pytestmark = pytest.mark.timeout(120)


def payment(subscription: str, amount: int = 999) -> CloudEvent:
    return CloudEvent(
        type="payment.captured",
        source="/subscription",
        data={
            "subscription_id": subscription,
            "user_id": "u1",
            "plan": "standard",
            "amount_cents": amount,
            "currency": "EUR",
        },
    )


async def test_sixteen_concurrent_writers_each_win_exactly_one_version(database: str) -> None:
    store = EventStore(database)
    stream = unique("sub")
    conflicts: list[ConcurrencyError] = []

    async def writer(n: int) -> None:
        conn = await store.connect()
        async with conn:
            event = payment(stream, amount=n)
            while True:
                current = len(await store.read_stream(conn, stream))
                try:
                    await store.append_to_stream(conn, stream, [event], expected_version=current)
                    return
                except ConcurrencyError as error:
                    conflicts.append(error)

    await asyncio.gather(*(writer(n) for n in range(16)))
    conn = await store.connect()
    async with conn:
        recorded = await store.read_stream(conn, stream)
    assert [r.version for r in recorded] == list(range(1, 17))  # no gaps, no doubles
    assert sorted(r.event.data["amount_cents"] for r in recorded) == list(range(16))  # none lost
    positions = [r.position for r in recorded]
    assert positions == sorted(positions)
    assert conflicts, "16 writers on one stream must have collided at least once"
    assert all(c.stream_id == stream and c.actual > c.expected for c in conflicts)


async def test_stale_writer_gets_a_conflict_naming_stream_and_versions(database: str) -> None:
    store = EventStore(database)
    stream = unique("sub")
    conn = await store.connect()
    async with conn:
        await store.append_to_stream(
            conn, stream, [payment(stream), payment(stream)], expected_version=0
        )
        with pytest.raises(ConcurrencyError) as caught:
            await store.append_to_stream(conn, stream, [payment(stream)], expected_version=1)
    assert str(caught.value) == f"stream {stream!r}: expected version 1, but it is at version 2"


async def test_events_round_trip_with_their_envelope_and_snapshots_replace_older_ones(
    database: str,
) -> None:
    store = EventStore(database)
    stream = unique("sub")
    event = payment(stream)
    conn = await store.connect()
    async with conn:
        await store.append_to_stream(conn, stream, [event], expected_version=0)
        (recorded,) = await store.read_stream(conn, stream)
        assert recorded.event.id == event.id
        assert recorded.event.data == event.data
        assert recorded.event.correlationid == event.correlationid
        await store.save_snapshot(conn, Snapshot(stream, 5, {"plan": "premium"}))
        await store.save_snapshot(conn, Snapshot(stream, 3, {"plan": "stale"}))
        snapshot = await store.load_snapshot(conn, stream)
    assert snapshot == Snapshot(stream, 5, {"plan": "premium"})


async def test_outbox_rows_exist_only_if_the_append_committed(database: str) -> None:
    store = EventStore(database)
    stream = unique("sub")
    first, late = payment(stream), payment(stream)
    conn = await store.connect()
    async with conn:
        await store.append_to_stream(conn, stream, [first], expected_version=0, publish=[first])
        with pytest.raises(ConcurrencyError):
            await store.append_to_stream(conn, stream, [late], expected_version=0, publish=[late])
    with psycopg.connect(database) as sync:
        rows = sync.execute(
            "SELECT event_id::text FROM outbox WHERE event_id = ANY(%s::uuid[])",
            ([first.id, late.id],),
        ).fetchall()
    assert rows == [(first.id,)]


def test_migrations_are_idempotent(database: str) -> None:
    assert migrate(database) == []
