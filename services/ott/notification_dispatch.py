"""Turns a recommendation into a notification job for the workers."""

from __future__ import annotations

from collections.abc import Iterable

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext


def handle(event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
    if event.type != "recommendation.generated":
        return ()
    videos = list(event.data["video_ids"])
    return (
        event.caused(
            "notification.requested",
            ctx.source,
            {
                "user_id": event.data["user_id"],
                "channel": "push",
                "title": f"{len(videos)} new picks for you",
                "video_ids": videos,
            },
        ),
    )
