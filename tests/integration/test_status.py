"""`tide status` reports what the broker knows: members, lag, retry backlog, dead letters."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.integration.test_consumer_runner import rating, recording
from tests.runtime_fixtures import RunningGroup
from tide.cli import app
from tide.errors import PermanentError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(120)


def _status(brokers: Brokers, catalog: Catalog, group: ConsumerGroup) -> dict[str, Any]:
    suffix = group.name.removeprefix("badges-")
    result = CliRunner().invoke(
        app,
        ["status", "--group", group.name, "--output", "json"],
        env={"TIDE_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap, "TIDE_CATALOG_SUFFIX": suffix},
    )
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    return dict(row)


def test_status_matches_what_was_produced_and_consumed(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    effects_table: str,
) -> None:
    group = next(g for g in catalog.consumer_groups if g.name.startswith("badges"))
    for stars in (5, 4, 3, 2, 1, 5, 4, 3, 2, 5):
        publisher.publish(rating(f"s-{stars}", stars))
    before = _status(brokers, catalog, group)
    assert (before["members"], before["lag"], before["dlq_depth"]) == (0, 10, 0)
    assert sum(before["lag_by_partition"].values()) == 10

    def refuse_one_star(event: CloudEvent, _attempt: int) -> None:
        if event.data["rating"] == 1:
            raise PermanentError("one star")

    handler, _ = recording(refuse_one_star)
    run_group(group, handler)
    wait_until(
        lambda: (s := _status(brokers, catalog, group))["lag"] == 0 and s["dlq_depth"] == 1,
        timeout=60,
        what="the group caught up, one record dead-lettered",
    )
    after = _status(brokers, catalog, group)
    assert after["members"] == 1
    assert after["retry_backlog"] == 0
    assert after["last_dead_letter_reason"] == "permanent: one star"


def test_status_without_a_reachable_cluster_warns_and_still_reports_kafka(
    brokers: Brokers, catalog: Catalog, tmp_path: Any
) -> None:
    group = next(g for g in catalog.consumer_groups if g.name.startswith("badges"))
    result = CliRunner().invoke(
        app,
        ["status", "--group", group.name, "--cluster", "--output", "json"],
        env={
            "TIDE_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap,
            "TIDE_CATALOG_SUFFIX": group.name.removeprefix("badges-"),
            "KUBECONFIG": str(tmp_path / "missing-kubeconfig"),
        },
    )
    assert result.exit_code == 0, result.output
    assert "warning: no replicas from the cluster" in " ".join(result.stderr.split())
    (row,) = json.loads(result.stdout)
    assert row["group"] == group.name
    assert row["replicas"] is None  # asked for, not to be had: shown as unknown
    assert row["lag"] == 0
