"""The end-to-end benchmark's reading of vegeta's results and the report of its targets: a
latency is only as right as the clock readings it subtracts."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.e2e import Run, Sent, vegeta_time
from bench.measure import Section
from bench.report import targets

from tide.events.envelope import CloudEvent, derived_id


def test_vegeta_timestamps_keep_their_microseconds_and_zone() -> None:
    expected = datetime(2026, 11, 23, 23, 59, 1, 123456, tzinfo=UTC).timestamp()
    assert vegeta_time("2026-11-23T23:59:01.123456789Z") == expected
    assert vegeta_time("2026-11-24T00:59:01.123456789+01:00") == expected
    assert vegeta_time("2026-11-23T23:59:01Z") == expected - 0.123456


def test_each_effect_is_found_by_the_id_its_cause_derives() -> None:
    """The bench predicts the recommendation's and the job's ids from the request's: the
    same derivation the handlers' `caused` uses."""
    watch = CloudEvent(type="video.watch.completed", source="/video-service", data={})
    recommendation = watch.caused("recommendation.generated", "/recommendation", {})
    job = recommendation.caused("notification.requested", "/notification-dispatch", {})
    sent = Sent(watch.id, 0.0, 0.01)
    assert sent.recommendation == recommendation.id
    assert (
        sent.job
        == job.id
        == derived_id(recommendation.id, "/notification-dispatch", "notification.requested")
    )


def test_quantiles_and_rate_of_a_run() -> None:
    effects = {"202": [n / 1000 for n in range(1, 101)]}
    run = Run(10.0, [Sent(str(n), 0.0, 0.0) for n in range(100)], 10.0, effects, {}, {})
    p50, p95, p99, top = run.quantiles("202")
    assert (round(p50, 4), round(p95, 4), round(p99, 4), top) == (0.0505, 0.0951, 0.099, 0.1)
    assert run.accepted_rate == 10.0


def test_the_targets_list_names_each_verdict_with_its_figure() -> None:
    section = Section("e2e", "", (("p99 ≤ 1 s: 1,200 ms", False), ("p50 ≤ 100 ms: 12 ms", True)))
    text = targets([], [section])
    assert "- p99 ≤ 1 s: 1,200 ms: **missed**" in text
    assert "- p50 ≤ 100 ms: 12 ms: met" in text
