"""The platform as processes (`tide run`): an HTTP watch event becomes one notification job."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from tests.conftest import unique
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.chaos.processes import LocalPlatform

pytestmark = pytest.mark.timeout(180)


def test_http_watch_event_yields_a_recommendation_and_exactly_one_notification_job(
    brokers: Brokers,
    database: str,
    platform: tuple[Catalog, LocalPlatform],
) -> None:
    catalog, processes = platform
    api = processes.start("video-service")
    for service in ("recommendation", "notification-dispatch", "notification-worker"):
        processes.start(service)
    content = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    try:
        for video, genres in (
            ("v-dune", ["scifi"]),
            ("v-alien", ["scifi", "horror"]),
            ("v-up", ["family"]),
        ):
            content.publish(
                CloudEvent(
                    type="content.published",
                    source="/content",
                    data={"video_id": video, "title": video, "genres": genres},
                )
            )
    finally:
        content.close()
    user = unique("viewer")
    # The catalogue reaches recommendation before the watch event does (same group, in order).
    wait_until(lambda: _catalogued(database, "v-up"), timeout=60, what="content in the catalogue")

    response = httpx.post(
        f"{api.url}/v1/events",
        json={
            "type": "video.watch.completed",
            "data": {
                "user_id": user,
                "video_id": "v-dune",
                "session_id": "s1",
                "watched_s": 7200,
                "finished": True,
            },
        },
        headers=processes.credentials("player-app"),
        timeout=15,
    )
    assert response.status_code == 202, response.text
    assert response.json()["topic"] == catalog.event("video.watch.completed").topic

    wait_until(lambda: _notifications(database, user) >= 1, timeout=60, what="a notification job")
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT title FROM notifications_sent WHERE user_id = %s", (user,)
        ).fetchall()
    assert rows == [("1 new picks for you",)]  # exactly one job; v-alien shares a genre
    # Each of them did it as its own database role, as on a cluster.
    roles = ["recommendation", "notification-dispatch", "notification-worker"]
    with psycopg.connect(database) as conn:
        listed = "SELECT DISTINCT usename FROM pg_stat_activity WHERE usename = ANY(%s)"
        connected = {row[0] for row in conn.execute(listed, (roles,))}
    assert connected == set(roles)


def _catalogued(database: str, video: str) -> bool:
    with psycopg.connect(database) as conn:
        return (
            conn.execute("SELECT 1 FROM content_catalog WHERE video_id = %s", (video,)).fetchone()
            is not None
        )


def _notifications(database: str, user: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM notifications_sent WHERE user_id = %s", (user,)
        ).fetchone()
    return int(row[0]) if row else 0
