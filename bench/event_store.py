"""Event store: appends/s of Tide's EventStore against a bare INSERT into the same table and
against the `eventsourcing` library's PostgreSQL application recorder, on the same database.

Each writer appends to its own stream, so optimistic concurrency is checked but never
conflicts. Tide and `eventsourcing` both give every event a global position in commit
order (Tide with an advisory lock, `eventsourcing` with a table lock); the bare INSERT
does not, nor does it check versions: it is the floor of what PostgreSQL costs.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson
import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.types.json import Jsonb

from bench.measure import Mode, Path, Row, interleaved, timed
from bench.payloads import recommendation
from bench.setting import Setting
from tide.events.envelope import CloudEvent
from tide.store.event_store import EventStore


def _events(count: int) -> list[CloudEvent]:
    return [recommendation(200, n) for n in range(count)]


def tide(dsn: str, writers: int, appends: int, batch: int) -> Callable[[], None]:
    store = EventStore(dsn)

    async def writer() -> None:
        stream = f"bench-{uuid.uuid4().hex}"
        async with await store.connect() as conn:
            version = 0
            for _ in range(appends):
                version = await store.append_to_stream(
                    conn, stream, _events(batch), expected_version=version
                )

    async def all_writers() -> None:
        await asyncio.gather(*(writer() for _ in range(writers)))

    return lambda: asyncio.run(all_writers())


def bare(dsn: str, writers: int, appends: int, batch: int) -> Callable[[], None]:
    async def writer() -> None:
        stream = f"bare-{uuid.uuid4().hex}"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            version = 0
            for _ in range(appends):
                events = _events(batch)
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO events (stream_id, version, event_id, type, data)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        [
                            (stream, version + i + 1, e.id, e.type, Jsonb(dict(e.data)))
                            for i, e in enumerate(events)
                        ],
                    )
                version += batch

    async def all_writers() -> None:
        await asyncio.gather(*(writer() for _ in range(writers)))

    return lambda: asyncio.run(all_writers())


def eventsourcing_recorder(dsn: str, writers: int) -> PostgresApplicationRecorder:
    parts = urlsplit(dsn)
    datastore = PostgresDatastore(
        dbname=parts.path.lstrip("/"),
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "",
        password=parts.password or "",
        pool_size=writers,
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name="bench_stored_events")
    recorder.create_table()
    return recorder


def peer(
    recorder: PostgresApplicationRecorder, writers: int, appends: int, batch: int
) -> Callable[[], None]:
    """The library's own API is synchronous: one thread per writer, each with its stream."""

    def writer() -> None:
        stream = uuid.uuid4()
        for n in range(appends):
            events = _events(batch)
            recorder.insert_events(
                [
                    StoredEvent(
                        originator_id=stream,
                        originator_version=n * batch + i + 1,
                        topic=e.type,
                        state=orjson.dumps(dict(e.data)),
                    )
                    for i, e in enumerate(events)
                ]
            )

    def all_writers() -> None:
        threads = [threading.Thread(target=writer) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return all_writers


def measure(setting: Setting, mode: Mode) -> list[Row]:
    dsn = setting.postgres_dsn
    rows = []
    recorder = eventsourcing_recorder(dsn, 8)
    for writers, batch in ((1, 1), (8, 1), (1, 100), (8, 100)):
        appends = max(1, (300 if batch == 1 else 6) * mode.scale // (1 if writers == 1 else 2))
        count = writers * appends * batch
        paths: dict[str, Path] = {
            "tide": timed(count, tide(dsn, writers, appends, batch)),
            "eventsourcing": timed(count, peer(recorder, writers, appends, batch)),
            "bare": timed(count, bare(dsn, writers, appends, batch)),
        }
        rounds = interleaved(paths, mode)
        ratio_peer = rounds.ratio("tide", "eventsourcing")
        rows.append(
            Row(
                path="event store",
                case=f"{writers} writer{'s' if writers > 1 else ''}, batch {batch}",
                ours="append_to_stream: version check, global order, JSONB",
                baseline="`eventsourcing` PostgreSQL application recorder",
                ratio=ratio_peer,
                target=1.0,
                ours_rate=rounds.spread("tide").median,
                baseline_rate=rounds.spread("eventsourcing").median,
                extra=(
                    f"bare INSERT {rounds.spread('bare').median:,.0f}/s;"
                    f" ours/bare {rounds.ratio('tide', 'bare').text()}"
                ),
            )
        )
    return rows
