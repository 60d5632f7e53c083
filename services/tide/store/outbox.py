"""The outbox relay: publishes events committed to the outbox, then deletes them.

A row leaves the outbox only after Kafka acknowledged it, so a broker outage
delays events and loses none. A crash between the ack and the delete
publishes a row twice; consumers dedupe on the event id. A row that can never
be published (not a valid event) moves to `outbox_dead_letters` with its
reason, and the relay goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from tide import metrics
from tide.errors import pg_conninfo
from tide.kafka.producer import EventPublisher, PublishError
from tide.liveness import Heartbeat
from tide.store.event_store import envelope_to_event

log = logging.getLogger(__name__)

# A row that cannot become a valid event fails the same way on every attempt: it goes to
# `outbox_dead_letters` with its reason, and the rows after it are published. Without
# this the relay died on the first such row and every later payment waited forever.
# (InvalidEventError and EnvelopeError are ValueErrors, UnknownEventTypeError a LookupError.)
POISON = (ValueError, LookupError, TypeError)


class OutboxRelay:
    def __init__(self, dsn: str, publisher: EventPublisher, *, batch: int = 200) -> None:
        self.dsn = dsn
        self.publisher = publisher
        self.batch = batch
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                pg_conninfo(self.dsn), autocommit=True
            )
        return self._conn

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows left the outbox."""
        conn = await self._connection()
        async with conn.transaction():
            cursor = await conn.execute(
                "SELECT id, envelope FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self.batch,),
            )
            rows = await cursor.fetchall()
            if not rows:
                return 0
            # Queue the whole batch, then wait: one round trip's latency, not one per row.
            pending = []
            poison: list[tuple[int, str]] = []
            for row_id, envelope in rows:
                try:
                    pending.append(self.publisher.send(envelope_to_event(envelope)))
                except POISON as error:
                    poison.append((row_id, f"{type(error).__name__}: {error}"))
            # A broker that does not acknowledge raises PublishError here: the transaction
            # rolls back and every row waits in place, the poison ones included.
            await asyncio.gather(*(asyncio.wrap_future(f) for f in pending))
            for row_id, reason in poison:
                await conn.execute(
                    "INSERT INTO outbox_dead_letters (id, event_id, type, envelope, reason)"
                    " SELECT id, event_id, type, envelope, %s FROM outbox WHERE id = %s",
                    (reason, row_id),
                )
                log.error("outbox row %d dead-lettered: %s", row_id, reason)
                metrics.OUTBOX_DEAD_LETTERED.inc()
            await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([row[0] for row in rows],))
        return len(rows)

    async def backlog(self) -> int:
        conn = await self._connection()
        cursor = await conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox"
        )
        row = await cursor.fetchone()
        count, age = (int(row[0]), float(row[1])) if row else (0, 0.0)
        metrics.OUTBOX_BACKLOG.set(count)
        # A relay that runs but cannot publish (Kafka down, a row it cannot get past)
        # shows as an age that keeps growing: TideOutboxStalled.
        metrics.OUTBOX_OLDEST_AGE.set(age)
        return count

    async def run(
        self,
        stop: asyncio.Event,
        *,
        idle_s: float = 0.2,
        backoff_s: float = 1.0,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        """Relay until `stop` is set; an outage of Kafka or PostgreSQL only pauses it."""
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.beat()
            try:
                moved = await self.relay_once()
                await self.backlog()
            except (PublishError, psycopg.Error, OSError) as error:
                log.warning("outbox relay paused: %s", error)
                metrics.EVENT_STORE_ERRORS.labels("outbox").inc()
                if self._conn is not None:
                    await self._conn.close()
                self._conn = None
                moved = 0
                wait = backoff_s
            else:
                wait = 0 if moved else idle_s
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        await self.close()

    async def close(self) -> None:
        """Close the relay's database connection (run() does it when it stops)."""
        if self._conn is not None:
            await self._conn.close()
        self._conn = None


def dead_letters(conn: psycopg.Connection[Any], *, limit: int) -> list[dict[str, Any]]:
    """The rows set aside, oldest first, with why (what `tide outbox ls` shows)."""
    rows = conn.execute(
        "SELECT id, event_id, type, reason, failed_at FROM outbox_dead_letters"
        " ORDER BY id LIMIT %s",
        (limit,),
    ).fetchall()
    keys = ("id", "event_id", "type", "reason", "failed_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def resend(conn: psycopg.Connection[Any], ids: list[int] | None) -> int:
    """Put dead-lettered rows (all of them when `ids` is None) back in the outbox, in one
    transaction; returns how many. The relay tries them again, in their first order: one
    still invalid comes back here with its reason."""
    with conn.transaction():
        moved = conn.execute(
            "WITH gone AS (DELETE FROM outbox_dead_letters"
            " WHERE %(all)s OR id = ANY(%(ids)s) RETURNING *)"
            " INSERT INTO outbox (id, event_id, type, envelope)"
            " SELECT id, event_id, type, envelope FROM gone ORDER BY id",
            {"all": ids is None, "ids": ids or []},
        ).rowcount
    return moved
