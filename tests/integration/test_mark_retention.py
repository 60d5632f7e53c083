"""The exactly-once marks are bounded (#15.8): marks older than their group's redelivery
window go, recent ones stay, other groups' stay, and the count is a metric."""

from __future__ import annotations

import psycopg
import pytest
from prometheus_client import REGISTRY

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.store.retention import MarkPruner

pytestmark = pytest.mark.timeout(120)
DAY_S = 86_400


def _mark(db: psycopg.Connection[object], consumer: str, event_id: str, age_days: float) -> None:
    db.execute(
        "INSERT INTO processed_events (consumer, event_id, processed_at)"
        " VALUES (%s, %s, now() - make_interval(secs => %s))",
        (consumer, event_id, age_days * DAY_S),
    )


def _left(db: psycopg.Connection[object], consumer: str) -> set[str]:
    rows = db.execute(
        "SELECT event_id FROM processed_events WHERE consumer = %s", (consumer,)
    ).fetchall()
    return {row[0] for row in rows}


def test_old_marks_go_recent_ones_stay_and_the_count_is_a_metric(database: str) -> None:
    group = CATALOG.group("personalization")
    # video-events keep 7 days and the DLQ 14: a mark must outlive 21 days, not more.
    keep_s = CATALOG.dedupe_retention_ms(group) / 1000
    assert keep_s == 21 * DAY_S
    mine, other = unique("prune"), unique("keep")
    with psycopg.connect(database, autocommit=True) as db:
        _mark(db, mine, "ancient", 60)
        _mark(db, mine, "just-past", 21.5)
        _mark(db, mine, "inside-window", 20)
        _mark(db, mine, "fresh", 0)
        _mark(db, other, "ancient-elsewhere", 60)
        pruned = MarkPruner(database, {mine: keep_s}).prune_once()
        assert pruned == {mine: 2}
        assert _left(db, mine) == {"inside-window", "fresh"}
        assert _left(db, other) == {"ancient-elsewhere"}, "only the pruned group's marks go"
    assert REGISTRY.get_sample_value("tide_processed_marks", {"group": mine}) == 2
    assert REGISTRY.get_sample_value("tide_processed_marks_pruned_total", {"group": mine}) == 2


def test_a_database_outage_only_skips_a_round(database: str) -> None:
    down = "postgresql://tide@127.0.0.1:9/tide"  # the discard port: nothing answers
    assert MarkPruner(down, {"any": 1.0}).prune_once() == {}
