"""Delivers a notification job (here: records it as sent; a real sender would call a push API)."""

from __future__ import annotations

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext


def handle(event: CloudEvent, ctx: HandlerContext) -> None:
    data = event.data
    ctx.db.execute(
        "INSERT INTO notifications_sent (event_id, user_id, channel, title)"
        " VALUES (%s, %s, %s, %s)",
        (event.id, data["user_id"], data["channel"], data["title"]),
    )
