"""Exactly-once effects: a handler runs in the transaction that records its event as processed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext

# The first handler failure of a batch: the event's index and what it raised.
Failure = tuple[int, Exception]


# One statement marks a whole batch. Binary parameters (%b): a text array literal costs a
# regex per element to quote (pyinstrument, bench/).
MARK_PROCESSED = (
    "INSERT INTO processed_events (consumer, event_id) SELECT %s, unnest(%b::text[])"
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


def mark_processed(
    db: psycopg.Connection[Any], consumer: str, event_ids: Sequence[str]
) -> set[str]:
    """Mark the ids processed by `consumer` (in the caller's transaction); returns those that
    were not yet, which are the ones to handle. One statement for a whole batch."""
    rows = db.execute(MARK_PROCESSED, (consumer, list(event_ids))).fetchall()
    return {row[0] for row in rows}


def handle_batch_once(
    db: psycopg.Connection[Any],
    consumer: str,
    events: Sequence[CloudEvent],
    run: Callable[[CloudEvent], None],
    before_commit: Callable[[], None] | None = None,
) -> tuple[list[bool], Failure | None]:
    """One transaction: mark the events processed by `consumer`, then `run` each that was
    not yet (its handler), then `before_commit` (which sends what they caused and waits
    for it to be acknowledged) unless a `run` failed.

    Returns which events were duplicates (nothing ran for them), and the first failure of
    `run`, which rolled the whole transaction back. Errors of the marks or the commit
    propagate. What a handler caused is sent before the commit, so a crash in between
    re-runs the handler, which emits the same derived ids again, and their consumers
    dedupe those in turn. An error of `before_commit` propagates, like the commit's.
    """
    duplicates: list[bool] = []
    failure: Failure | None = None
    with db.transaction():
        first = mark_processed(db, consumer, [event.id for event in events])
        for index, event in enumerate(events):
            duplicates.append(event.id not in first)
            if duplicates[-1]:
                continue
            first.discard(event.id)  # the same id again in this batch is a duplicate
            try:
                run(event)
            except Exception as error:  # noqa: BLE001 - the caller classifies it
                failure = (index, error)
                raise psycopg.Rollback from None
        if before_commit is not None:
            before_commit()
    return duplicates, failure


def emit_caused(
    handler: Handler,
    event: CloudEvent,
    context: HandlerContext,
    emit: Callable[[CloudEvent], object],
) -> None:
    """Run `handler` and emit each event it caused."""
    for caused in handler(event, context) or ():
        emit(caused)


def handle_once(
    db: psycopg.Connection[Any],
    context: HandlerContext,
    handler: Handler,
    event: CloudEvent,
    emit: Callable[[CloudEvent], object],
) -> bool:
    """Run `handler` unless `context.consumer` already processed this event id: a batch of
    one. Returns True for a duplicate (nothing ran); a handler's error propagates, after
    its effects and the mark were rolled back."""
    duplicates, failure = handle_batch_once(
        db, context.consumer, [event], lambda one: emit_caused(handler, one, context, emit)
    )
    if failure is not None:
        raise failure[1]
    return duplicates[0]


def prune_processed(
    db: psycopg.Connection[Any], consumer: str, keep_s: float, *, batch: int = 10_000
) -> int:
    """Delete `consumer`'s marks older than `keep_s`, a batch per transaction so a large
    backlog never holds a long lock; returns how many went."""
    pruned = 0
    while True:
        deleted = db.execute(
            "DELETE FROM processed_events WHERE ctid IN ("
            " SELECT ctid FROM processed_events WHERE consumer = %s"
            " AND processed_at < now() - make_interval(secs => %s) LIMIT %s)",
            (consumer, keep_s, batch),
        ).rowcount
        pruned += deleted
        if deleted < batch:
            return pruned


def count_processed(db: psycopg.Connection[Any], consumer: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM processed_events WHERE consumer = %s", (consumer,)
    ).fetchone()
    return int(row[0]) if row else 0
