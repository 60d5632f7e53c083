"""The platform as processes (`tide run`): an HTTP watch event becomes one notification job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import unique
from tests.harness import Brokers, BrokerSession, HarnessError
from tests.harness.process import free_port
from tests.runtime_fixtures import create_topics
from tide.catalog import CATALOG
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
) -> Iterator[tuple[str, Catalog, Callable[[str], subprocess.Popen[bytes]]]]:
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
    children: list[subprocess.Popen[bytes]] = []

    def start(service: str) -> subprocess.Popen[bytes]:
        port = free_port()
        env = {
            **os.environ,
            **brokers.as_env(),
            "TIDE_SERVICE": service,
            "TIDE_CATALOG_SUFFIX": suffix,
            "TIDE_HTTP_PORT": str(port),
        }
        with (tmp_path / f"{service}.log").open("wb") as log:  # the child keeps its own copy
            child = subprocess.Popen(
                [sys.executable, "-m", "tide", "run", service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        child.port = port  # type: ignore[attr-defined]
        children.append(child)
        wait_until(
            lambda: _ready(port),
            timeout=60,
            what=f"{service} ready on :{port}",
            alive=lambda: None if child.poll() is None else f"{service} exited: {child.returncode}",
        )
        return child

    yield suffix, catalog, start
    for child in children:
        child.send_signal(signal.SIGTERM)
    for child in children:
        child.wait(timeout=60)
    for child in children:
        service = child.args[-1]  # type: ignore[index]
        # uvicorn re-raises SIGTERM after its graceful shutdown, hence -15 for the API.
        assert child.returncode in (0, -signal.SIGTERM), f"{service} exited {child.returncode}"
        log = (tmp_path / f"{service}.log").read_text()
        assert f"{service} stopped cleanly" in log, (
            f"{service} did not drain on SIGTERM:\n{log[-2000:]}"
        )


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_http_watch_event_yields_a_recommendation_and_exactly_one_notification_job(
    brokers: Brokers,
    database: str,
    platform: tuple[str, Catalog, Callable[[str], subprocess.Popen[bytes]]],
) -> None:
    _suffix, catalog, start = platform
    api = start("video-service")
    for service in ("recommendation", "notification-dispatch", "notification-worker"):
        start(service)
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
        f"http://127.0.0.1:{api.port}/v1/events",  # type: ignore[attr-defined]
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
