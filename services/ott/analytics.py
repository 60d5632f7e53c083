"""Concurrent viewers and the quality mix, from sessions that heartbeats keep alive."""

from __future__ import annotations

from typing import Any

import psycopg

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext

# A session with no heartbeat for this long no longer counts as watching.
SESSION_TTL_S = 30


def handle(event: CloudEvent, ctx: HandlerContext) -> None:
    data = event.data
    if event.type in {"video.watch.started", "video.heartbeat", "video.quality.changed"}:
        ctx.db.execute(
            "INSERT INTO viewing_sessions (session_id, user_id, video_id, quality, last_seen)"
            " VALUES (%(s)s, %(u)s, %(v)s, %(q)s, %(t)s)"
            " ON CONFLICT (session_id) DO UPDATE SET"
            " quality = coalesce(excluded.quality, viewing_sessions.quality),"
            " last_seen = greatest(viewing_sessions.last_seen, excluded.last_seen)",
            {
                "s": data["session_id"],
                "u": data["user_id"],
                "v": data["video_id"],
                "q": data.get("quality"),
                "t": event.time,
            },
        )
    elif event.type == "video.watch.completed":
        ctx.db.execute("DELETE FROM viewing_sessions WHERE session_id = %s", (data["session_id"],))


def concurrent_viewers(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM viewing_sessions WHERE last_seen > now() - make_interval(secs => %s)",
        (SESSION_TTL_S,),
    ).fetchone()
    return int(row[0]) if row else 0


def quality_distribution(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = db.execute(
        "SELECT coalesce(quality, 'unknown'), count(*) FROM viewing_sessions"
        " WHERE last_seen > now() - make_interval(secs => %s) GROUP BY 1",
        (SESSION_TTL_S,),
    ).fetchall()
    return {quality: int(count) for quality, count in rows}
