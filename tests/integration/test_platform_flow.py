"""The platform as processes (`tide run`): an HTTP watch event becomes one notification job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import unique
from tests.harness import Brokers, BrokerSession, HarnessError
from tests.runtime_fixtures import create_topics
from tide.catalog import CATALOG
from tide.chaos.processes import LocalPlatform
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher
from tide.rabbitmq.definitions import definitions
from tide.topology import Catalog
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def platform(
    brokers: Brokers, broker_session: BrokerSession, database: str, tmp_path: Path
) -> Iterator[tuple[Catalog, LocalPlatform]]:
    """A private copy of the platform (suffixed names), its services run by `tide run`."""
    suffix = unique("p")
    catalog = CATALOG.isolated(suffix)
    create_topics(brokers.kafka_bootstrap, list(catalog.all_topics()))
    if broker_session.rabbitmq is None:
        raise HarnessError(
            "RabbitMQ",
            reason="this test loads the catalog's topology into the harness's own node",
            fix="unset TIDE_RABBITMQ_URL",
        )
    broker_session.rabbitmq.import_definitions(definitions(catalog))
    processes = LocalPlatform({**brokers.as_env(), "TIDE_CATALOG_SUFFIX": suffix}, tmp_path)
    yield catalog, processes
    problems = processes.stop()
    assert not problems, f"services did not drain on SIGTERM: {problems}"


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
