"""Exactly-once effects: a handler runs in the transaction that records its event as processed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext


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
        first = db.execute(
            "INSERT INTO processed_events (consumer, event_id) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (context.consumer, event.id),
        ).fetchone()
        if first is None:
            return True
        for caused in handler(event, context) or ():
            emit(caused)
    return False
