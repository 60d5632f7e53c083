"""The reference handlers as plain functions on real PostgreSQL, through `handle_once`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ott import analytics, badges, notification_dispatch, personalization
from tests.conftest import unique
from tide.events.envelope import CloudEvent
from tide.handlers import Handler, HandlerContext
from tide.store.processed import handle_once


@pytest.fixture
def db(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


def run(db: psycopg.Connection[Any], handler: Handler, event: CloudEvent) -> list[CloudEvent]:
    emitted: list[CloudEvent] = []
    context = HandlerContext(db=db, consumer=f"test-{handler.__module__}", source="/test")
    handle_once(db, context, handler, event, emitted.append)
    return emitted


def video(type_: str, **data: object) -> CloudEvent:
    return CloudEvent(type=type_, source="/video-service", data=data)


def test_analytics_counts_live_sessions_and_their_quality(db: psycopg.Connection[Any]) -> None:
    user, s1, s2 = unique("u"), unique("s"), unique("s")
    before = analytics.concurrent_viewers(db)
    run(
        db,
        analytics.handle,
        video("video.watch.started", user_id=user, video_id="v", session_id=s1, device="tv"),
    )
    run(
        db,
        analytics.handle,
        video(
            "video.heartbeat",
            user_id=user,
            video_id="v",
            session_id=s1,
            position_s=5,
            quality="1080p",
        ),
    )
    run(
        db,
        analytics.handle,
        video("video.watch.started", user_id=user, video_id="w", session_id=s2, device="web"),
    )
    run(
        db,
        analytics.handle,
        video("video.quality.changed", user_id=user, video_id="w", session_id=s2, quality="480p"),
    )
    assert analytics.concurrent_viewers(db) == before + 2
    mix = analytics.quality_distribution(db)
    assert mix["1080p"] >= 1
    assert mix["480p"] >= 1
    run(
        db,
        analytics.handle,
        video(
            "video.watch.completed",
            user_id=user,
            video_id="v",
            session_id=s1,
            watched_s=60,
            finished=True,
        ),
    )
    assert analytics.concurrent_viewers(db) == before + 1


def test_badges_award_the_first_watch_once_even_when_redelivered(
    db: psycopg.Connection[Any],
) -> None:
    user = unique("u")
    finished = video(
        "video.watch.completed",
        user_id=user,
        video_id="v",
        session_id="s",
        watched_s=9,
        finished=True,
    )
    run(db, badges.handle, finished)
    run(db, badges.handle, finished)  # a redelivery
    rows = db.execute("SELECT badge FROM badges WHERE user_id = %s", (user,)).fetchall()
    assert rows == [("first-watch",)]
    count = db.execute("SELECT count FROM completions WHERE user_id = %s", (user,)).fetchone()
    assert count == (1,)


def test_personalization_keeps_watch_time_and_ratings(db: psycopg.Connection[Any]) -> None:
    user = unique("u")
    run(
        db,
        personalization.handle,
        video(
            "video.watch.completed",
            user_id=user,
            video_id="v1",
            session_id="s",
            watched_s=30,
            finished=False,
        ),
    )
    run(
        db,
        personalization.handle,
        video(
            "video.watch.completed",
            user_id=user,
            video_id="v2",
            session_id="t",
            watched_s=45,
            finished=True,
        ),
    )
    run(db, personalization.handle, video("video.rated", user_id=user, video_id="v2", rating=4))
    profile = db.execute(
        "SELECT watched, watched_s, ratings, rating_sum, last_video_id"
        " FROM viewer_profiles WHERE user_id = %s",
        (user,),
    ).fetchone()
    assert profile == (2, 75.0, 1, 4, "v2")


def test_dispatch_turns_a_recommendation_into_one_job_with_a_stable_id(
    db: psycopg.Connection[Any],
) -> None:
    recommendation = CloudEvent(
        type="recommendation.generated",
        source="/recommendation",
        data={"user_id": "u", "video_ids": ["a", "b"], "reason": "r"},
    )
    context = HandlerContext(db=db, consumer="unused", source="/notification-dispatch")
    first = list(notification_dispatch.handle(recommendation, context))
    again = list(notification_dispatch.handle(recommendation, context))
    assert [e.id for e in first] == [e.id for e in again]
    (job,) = first
    assert job.type == "notification.requested"
    assert job.causationid == recommendation.id
    assert job.data["title"] == "2 new picks for you"
