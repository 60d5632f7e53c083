"""Recommends what to watch next: other videos that share a genre with one just finished."""

from __future__ import annotations

from collections.abc import Iterable

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext

MAX_RECOMMENDATIONS = 5


def handle(event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
    data = event.data
    if event.type == "content.published":
        ctx.db.execute(
            "INSERT INTO content_catalog (video_id, title, genres) VALUES (%s, %s, %s)"
            " ON CONFLICT (video_id) DO UPDATE"
            " SET title = excluded.title, genres = excluded.genres",
            (data["video_id"], data["title"], list(data["genres"])),
        )
        return ()
    if event.type != "video.watch.completed" or not data["finished"]:
        return ()
    rows = ctx.db.execute(
        "SELECT other.video_id FROM content_catalog AS watched"
        " JOIN content_catalog AS other"
        "   ON other.genres && watched.genres AND other.video_id <> watched.video_id"
        " WHERE watched.video_id = %s ORDER BY other.video_id LIMIT %s",
        (data["video_id"], MAX_RECOMMENDATIONS),
    ).fetchall()
    if not rows:
        return ()
    return (
        event.caused(
            "recommendation.generated",
            ctx.source,
            {
                "user_id": data["user_id"],
                "video_ids": [row[0] for row in rows],
                "reason": f"because you watched {data['video_id']}",
            },
        ),
    )
