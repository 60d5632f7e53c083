"""Badges for viewing milestones: the 1st, 10th and 100th finished video."""

from __future__ import annotations

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext

MILESTONES = {1: "first-watch", 10: "regular", 100: "binge-master"}


def handle(event: CloudEvent, ctx: HandlerContext) -> None:
    if event.type != "video.watch.completed" or not event.data["finished"]:
        return
    user = event.data["user_id"]
    row = ctx.db.execute(
        "INSERT INTO completions (user_id, count) VALUES (%s, 1) ON CONFLICT (user_id)"
        " DO UPDATE SET count = completions.count + 1 RETURNING count",
        (user,),
    ).fetchone()
    badge = MILESTONES.get(int(row[0])) if row else None
    if badge is not None:
        ctx.db.execute(
            "INSERT INTO badges (user_id, badge) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (user, badge),
        )
