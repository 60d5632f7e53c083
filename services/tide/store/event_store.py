"""An append-only event store in PostgreSQL with optimistic concurrency, snapshots and an outbox.

Appends take a transaction-scoped advisory lock so global positions are
assigned in commit order: a projection that reads `position > checkpoint` can
never skip an event that commits late. Throughput is the price; see bench/.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tide import metrics
from tide.errors import pg_conninfo
from tide.events.envelope import CloudEvent

_APPEND_LOCK = 7_305_002


def _jsonb(document: Any) -> Jsonb:
    """A JSONB parameter serialized by orjson (psycopg's default is the stdlib's json)."""
    return Jsonb(document, dumps=orjson.dumps)


class ConcurrencyError(RuntimeError):
    """A writer's expected version is stale: someone appended to the stream first."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but it is at version {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream_id: str
    version: int
    event: CloudEvent


@dataclass(frozen=True)
class Snapshot:
    stream_id: str
    version: int
    state: dict[str, Any]


class EventStore:
    """Streams of CloudEvents in one `events` table; the outbox shares their transaction."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # At 0 until the first failure (the outbox relay writes "outbox").
        for operation in ("append", "outbox"):
            metrics.EVENT_STORE_ERRORS.labels(operation)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        # Autocommit: every `transaction()` block is then a real transaction, not a savepoint.
        return await psycopg.AsyncConnection.connect(pg_conninfo(self.dsn), autocommit=True)

    async def append_to_stream(
        self,
        conn: psycopg.AsyncConnection[Any],
        stream_id: str,
        events: Sequence[CloudEvent],
        *,
        expected_version: int,
        publish: Sequence[CloudEvent] = (),
    ) -> int:
        """Append after `expected_version` (0: a new stream); returns the stream's new version.

        Events in `publish` (some of `events`) also enter the outbox, so they reach
        Kafka when, and only if, this transaction commits.
        """
        ids = {e.id for e in events}
        if any(e.id not in ids for e in publish):
            raise ValueError("only events being appended can be published")
        # Encoded before the transaction starts: nothing but the server's work is done while
        # the append lock is held.
        rows = (
            stream_id,
            list(range(expected_version + 1, expected_version + len(events) + 1)),
            [uuid.UUID(e.id) for e in events],
            [e.type for e in events],
            [_jsonb(dict(e.data)) for e in events],
            [_jsonb(_metadata(e)) for e in events],
            stream_id,
            expected_version,
        )
        try:
            # One round trip: BEGIN, the lock, the insert (which checks the version itself)
            # and COMMIT are pipelined; five round trips held the lock before (bench/).
            async with conn.pipeline(), conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_APPEND_LOCK,))
                # One statement per append, however many events: rows in the given order,
                # none if the stream is not at the expected version. Arrays go in binary
                # (%b): as text, a jsonb[] is an array literal whose every element psycopg
                # quotes with a regex, most of an append's time (pyinstrument).
                inserted = await conn.execute(
                    "INSERT INTO events (stream_id, version, event_id, type, data, metadata)"
                    " SELECT %s, v, i, t, d, m FROM unnest("
                    "%b::int[], %b::uuid[], %b::text[], %b::jsonb[], %b::jsonb[]"
                    ") WITH ORDINALITY AS u(v, i, t, d, m, n)"
                    " WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = %s)"
                    " = %s ORDER BY n",
                    rows,
                )
                if publish:
                    # Only with the events: nothing when the version check failed.
                    await conn.execute(
                        "INSERT INTO outbox (event_id, type, envelope)"
                        " SELECT i, t, e FROM unnest(%b::uuid[], %b::text[], %b::jsonb[])"
                        " WITH ORDINALITY AS u(i, t, e, n)"
                        " WHERE EXISTS (SELECT FROM events WHERE event_id = %s) ORDER BY n",
                        (
                            [uuid.UUID(e.id) for e in publish],
                            [e.type for e in publish],
                            [_jsonb(_envelope(e)) for e in publish],
                            uuid.UUID(publish[0].id),
                        ),
                    )
            if inserted.rowcount != len(events):
                raise ConcurrencyError(
                    stream_id, expected_version, await self._version(conn, stream_id)
                )
        except ConcurrencyError:
            raise
        except psycopg.errors.UniqueViolation as exc:
            metrics.EVENT_STORE_ERRORS.labels("append").inc()
            raise ConcurrencyError(stream_id, expected_version, -1) from exc
        except psycopg.Error:
            metrics.EVENT_STORE_ERRORS.labels("append").inc()
            raise
        return expected_version + len(events)

    async def _version(self, conn: psycopg.AsyncConnection[Any], stream_id: str) -> int:
        cursor = await conn.execute(
            "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = %s", (stream_id,)
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def read_stream(
        self, conn: psycopg.AsyncConnection[Any], stream_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        return await _select(
            conn,
            "WHERE stream_id = %s AND version > %s ORDER BY version",
            (stream_id, after_version),
        )

    async def read_all(
        self, conn: psycopg.AsyncConnection[Any], after_position: int, limit: int = 500
    ) -> list[RecordedEvent]:
        """Every stream's events in global order, for projections."""
        return await _select(
            conn, "WHERE position > %s ORDER BY position LIMIT %s", (after_position, limit)
        )

    async def save_snapshot(self, conn: psycopg.AsyncConnection[Any], snapshot: Snapshot) -> None:
        await conn.execute(
            "INSERT INTO snapshots (stream_id, version, state) VALUES (%s, %s, %s)"
            " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,"
            " state = excluded.state, taken_at = now() WHERE snapshots.version < excluded.version",
            (snapshot.stream_id, snapshot.version, Jsonb(snapshot.state)),
        )

    async def load_snapshot(
        self, conn: psycopg.AsyncConnection[Any], stream_id: str
    ) -> Snapshot | None:
        cursor = await conn.execute(
            "SELECT version, state FROM snapshots WHERE stream_id = %s", (stream_id,)
        )
        row = await cursor.fetchone()
        return Snapshot(stream_id, int(row[0]), dict(row[1])) if row else None


async def _select(
    conn: psycopg.AsyncConnection[Any], clause: str, params: tuple[Any, ...]
) -> list[RecordedEvent]:
    query = "SELECT position, stream_id, version, event_id, type, data, metadata FROM events "
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute((query + clause).encode(), params)  # clause: literals from this module
        return [_recorded(row) for row in await cur.fetchall()]


def _metadata(event: CloudEvent) -> dict[str, str]:
    return {k: v for k, v in event.attributes().items() if k not in {"id", "type"}}


def _envelope(event: CloudEvent) -> dict[str, Any]:
    return {"attributes": event.attributes(), "data": dict(event.data)}


def envelope_to_event(envelope: dict[str, Any] | str) -> CloudEvent:
    document = json.loads(envelope) if isinstance(envelope, str) else envelope
    return CloudEvent.from_attributes(document["attributes"], document["data"])


def _recorded(row: dict[str, Any]) -> RecordedEvent:
    attributes = {**row["metadata"], "id": str(row["event_id"]), "type": row["type"]}
    return RecordedEvent(
        position=int(row["position"]),
        stream_id=row["stream_id"],
        version=int(row["version"]),
        event=CloudEvent.from_attributes(attributes, row["data"]),
    )
