"""What an experiment looks at: group backlogs and members, and the effects in PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient

from tide.kafka.transient import retrying
from tide.status import backlogs
from tide.topology import ConsumerGroup
from tide.waiting import wait_until


def wait_drained(
    client: dict[str, Any], groups: Iterable[ConsumerGroup], *, timeout: float, what: str = ""
) -> float:
    """Wait until every one of `groups` has no backlog; returns the seconds it took.

    At the deadline the error names each group still behind, with its backlog and members.
    """
    wanted = list(groups)
    started = time.monotonic()
    last: dict[str, int] = {}

    def drained() -> bool:
        last.update(backlogs(client, wanted))
        return not any(last.values())

    try:
        wait_until(drained, timeout=timeout, interval=0.5, what=what or "every group drained")
    except TimeoutError as exc:
        behind = ", ".join(
            f"{g.name}: {last[g.name]} behind, {members(client, g)} member(s)"
            for g in wanted
            if last.get(g.name)
        )
        raise TimeoutError(f"{exc} ({behind})") from None
    return time.monotonic() - started


def members(client: dict[str, Any], group: ConsumerGroup) -> int:
    admin = AdminClient(client)
    described = retrying(
        lambda: admin.describe_consumer_groups([group.name])[group.name].result(timeout=10), 10
    )
    return len(described.members)


@dataclass(frozen=True)
class UserEffects:
    watched: int  # personalization: one per completed watch
    completions: int  # badges: one per finished watch
    notifications: int  # notification-worker: one job per recommendation


def effects(database: str, users: list[str]) -> dict[str, UserEffects]:
    with psycopg.connect(database) as conn:
        watched: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, watched FROM viewer_profiles WHERE user_id = ANY(%s)", (users,)
            ).fetchall()
        )
        completions: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, count FROM completions WHERE user_id = ANY(%s)", (users,)
            ).fetchall()
        )
        notifications: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, count(*) FROM notifications_sent WHERE user_id = ANY(%s)"
                " GROUP BY 1",
                (users,),
            ).fetchall()
        )
    return {
        user: UserEffects(
            int(watched.get(user, 0)),
            int(completions.get(user, 0)),
            int(notifications.get(user, 0)),
        )
        for user in users
    }


def processed(database: str, group: ConsumerGroup, event_ids: list[str]) -> int:
    """How many of `event_ids` the group has processed (the mark its effects commit with)."""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_events WHERE consumer = %s AND event_id = ANY(%s)",
            (group.name, event_ids),
        ).fetchone()
    return int(row[0]) if row else 0
