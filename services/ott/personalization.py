"""A viewing profile per user: what and how much they watch, how they rate."""

from __future__ import annotations

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext


def handle(event: CloudEvent, ctx: HandlerContext) -> None:
    data = event.data
    if event.type == "video.watch.completed":
        ctx.db.execute(
            "INSERT INTO viewer_profiles (user_id, watched, watched_s, last_video_id)"
            " VALUES (%(user)s, 1, %(seconds)s, %(video)s)"
            " ON CONFLICT (user_id) DO UPDATE SET watched = viewer_profiles.watched + 1,"
            " watched_s = viewer_profiles.watched_s + %(seconds)s, last_video_id = %(video)s",
            {"user": data["user_id"], "seconds": data["watched_s"], "video": data["video_id"]},
        )
    elif event.type == "video.rated":
        ctx.db.execute(
            "INSERT INTO viewer_profiles (user_id, ratings, rating_sum) VALUES (%(user)s, 1, %(r)s)"
            " ON CONFLICT (user_id) DO UPDATE SET ratings = viewer_profiles.ratings + 1,"
            " rating_sum = viewer_profiles.rating_sum + %(r)s",
            {"user": data["user_id"], "r": data["rating"]},
        )
