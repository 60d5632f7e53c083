"""Projections: read models kept from the event store, with a stored checkpoint per projection.

A projection applies each event and advances its checkpoint in one transaction,
so a crash never applies an event twice or skips one. `rebuild` resets the read
model and replays every event from position zero.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from tide.store.event_store import EventStore, RecordedEvent

Apply = Callable[[psycopg.AsyncConnection[Any], RecordedEvent], Awaitable[None]]
Reset = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Projection:
    name: str
    apply: Apply
    reset: Reset


class ProjectionRunner:
    def __init__(self, store: EventStore, projection: Projection, *, batch: int = 500) -> None:
        self.store = store
        self.projection = projection
        self.batch = batch

    async def checkpoint(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cursor = await conn.execute(
            "SELECT position FROM projection_checkpoints WHERE projection = %s",
            (self.projection.name,),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def catch_up(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Apply every event after the checkpoint; returns how many were applied."""
        applied = 0
        while True:
            async with conn.transaction():
                # The row lock keeps two runners of one projection from interleaving.
                await conn.execute(
                    "INSERT INTO projection_checkpoints (projection, position) VALUES (%s, 0)"
                    " ON CONFLICT DO NOTHING",
                    (self.projection.name,),
                )
                cursor = await conn.execute(
                    "SELECT position FROM projection_checkpoints WHERE projection = %s FOR UPDATE",
                    (self.projection.name,),
                )
                row = await cursor.fetchone()
                position = int(row[0]) if row else 0
                events = await self.store.read_all(conn, position, self.batch)
                for recorded in events:
                    await self.projection.apply(conn, recorded)
                if events:
                    await conn.execute(
                        "UPDATE projection_checkpoints SET position = %s, updated_at = now()"
                        " WHERE projection = %s",
                        (events[-1].position, self.projection.name),
                    )
            applied += len(events)
            if len(events) < self.batch:
                return applied

    async def rebuild(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Empty the read model and replay the whole store into it."""
        async with conn.transaction():
            await self.projection.reset(conn)
            await conn.execute(
                "DELETE FROM projection_checkpoints WHERE projection = %s", (self.projection.name,)
            )
        return await self.catch_up(conn)
