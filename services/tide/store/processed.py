"""Exactly-once effects: a handler runs in the transaction that records its event as processed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext


def mark_processed(
    db: psycopg.Connection[Any], consumer: str, event_ids: Sequence[str]
) -> set[str]:
    """Mark the ids processed by `consumer` (in the caller's transaction); returns those that
    were not yet, which are the ones to handle. One statement for a whole batch."""
    rows = db.execute(
        "INSERT INTO processed_events (consumer, event_id) SELECT %s, unnest(%s::text[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        (consumer, list(event_ids)),
    ).fetchall()
    return {row[0] for row in rows}


def handle_once(
    db: psycopg.Connection[Any],
    context: HandlerContext,
    handler: Handler,
    event: CloudEvent,
    emit: Callable[[CloudEvent], object],
) -> bool:
    """Run `handler` unless `context.consumer` already processed this event id.

    Returns True for a duplicate (nothing ran). The handler's database effects
    and the processed mark commit together; what it caused is emitted before the
    commit, so a crash in between re-runs the handler, which emits the same
    derived ids again, and their consumers dedupe those in turn.
    """
    with db.transaction():
        if not mark_processed(db, context.consumer, [event.id]):
            return True
        for caused in handler(event, context) or ():
            emit(caused)
    return False
