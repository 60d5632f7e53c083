"""promtool proves each alert rule fires when it should and stays quiet when it should not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.alerts import hastened, rule_groups

from ott.catalog import CATALOG
from tide.topology import ConsumerGroup


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (make system-deps)"
    return found


def _summary(alert: str, labels: dict[str, str]) -> str:
    """The rule's summary as Prometheus renders it for these labels."""
    for group in rule_groups(CATALOG):
        for rule in group["rules"]:
            own = {k: v for k, v in rule["labels"].items() if k != "severity"}
            if rule["alert"] == alert and own.items() <= labels.items():
                summary: str = rule["annotations"]["summary"]
                for key, value in labels.items():
                    summary = summary.replace(f"{{{{ $labels.{key} }}}}", value)
                return summary
    raise LookupError(alert)


def _case(
    series: dict[str, str], alert: str, at: str, fires: dict[str, str] | None
) -> dict[str, Any]:
    expected = (
        [{"exp_labels": fires, "exp_annotations": {"summary": _summary(alert, fires)}}]
        if fires is not None
        else []
    )
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def _group_cases(group: ConsumerGroup) -> list[dict[str, Any]]:
    g = group.name
    labels = {"consumergroup": g}
    lag = f'kafka_consumergroup_lag{{consumergroup="{g}",topic="{group.topics[0]}",partition="0"}}'
    members = f'kafka_consumergroup_members{{consumergroup="{g}"}}'
    dlq = f'kafka_topic_partition_current_offset{{topic="{group.dlq_topic}",partition="0"}}'
    high = group.alerting.max_lag * 2
    cases = [
        _case(
            {lag: f"{high}x30"},
            "TideConsumerGroupLagHigh",
            "15m",
            {"severity": "warning", **labels},
        ),
        _case({lag: "10x30"}, "TideConsumerGroupLagHigh", "15m", None),
        # A short spike above the threshold is not an incident.
        _case({lag: f"10 {high} 10x30"}, "TideConsumerGroupLagHigh", "15m", None),
        _case(
            {dlq: "0 0 0 1 2 3 4 5 6 7"},
            "TideDeadLettersGrowing",
            "8m",
            {"severity": "critical", **labels},
        ),
        _case({dlq: "7x10"}, "TideDeadLettersGrowing", "8m", None),
    ]
    activation = group.autoscaling.activation_lag_threshold
    if group.autoscaling.min_replicas > 0:
        cases += [
            _case(
                {members: "0x10", lag: "0x10"},
                "TideConsumerGroupNoMembers",
                "8m",
                {"severity": "critical", **labels},
            ),
            _case({members: "2x10", lag: "0x10"}, "TideConsumerGroupNoMembers", "8m", None),
        ]
    else:
        cases += [
            _case(
                {members: "0x10", lag: f"{activation + 50}x10"},
                "TideConsumerGroupNoMembers",
                "8m",
                {"severity": "critical", **labels},
            ),
            # Scaled to zero and nothing waiting: that is KEDA doing its job.
            _case({members: "0x10", lag: "0x10"}, "TideConsumerGroupNoMembers", "8m", None),
        ]
    return cases


def _all_cases() -> list[dict[str, Any]]:
    cases = [case for group in CATALOG.consumer_groups for case in _group_cases(group)]
    for queue in CATALOG.queues:
        depth = f'rabbitmq_queue_messages{{queue="{queue.dlq}"}}'
        cases += [
            _case(
                {depth: "3x5"},
                "TideQueueDeadLetters",
                "4m",
                {"severity": "critical", "queue": queue.name},
            ),
            _case({depth: "0x5"}, "TideQueueDeadLetters", "4m", None),
        ]
    failures = 'tide_publish_failures_total{event_type="video.rated",reason="timeout"}'
    errors = 'tide_event_store_errors_total{operation="append"}'
    age = "tide_outbox_oldest_age_seconds"
    unavailable = 'tide_api_auth_refusals_total{service="video-service",status="503"}'
    unauthenticated = 'tide_api_auth_refusals_total{service="video-service",status="401"}'
    cases += [
        _case(
            {failures: "0+3x10"},
            "TidePublishFailures",
            "8m",
            {"severity": "critical", "event_type": "video.rated"},
        ),
        _case({failures: "4x10"}, "TidePublishFailures", "8m", None),
        _case(
            {errors: "0+1x10"},
            "TideEventStoreErrors",
            "8m",
            {"severity": "critical", "operation": "append"},
        ),
        _case({errors: "0x10"}, "TideEventStoreErrors", "8m", None),
        # A relay stuck for good: the oldest row ages by a minute every minute.
        _case({age: "0+60x12"}, "TideOutboxStalled", "10m", {"severity": "critical"}),
        # A busy but moving outbox: rows are published within seconds.
        _case({age: "3x12"}, "TideOutboxStalled", "10m", None),
        # The issuer's keys cannot be read: every bearer request is answered 503.
        _case(
            {unavailable: "0+20x10", unauthenticated: "0x10"},
            "TideApiIssuerUnreachable",
            "8m",
            {"severity": "critical"},
        ),
        # One 503 (the keys fetched a moment late as a pod starts) pages nobody.
        _case(
            {unavailable: "0x3 1x7", unauthenticated: "0x10"},
            "TideApiIssuerUnreachable",
            "6m",
            None,
        ),
        # Bad tokens (401) are the clients' to mend, not the platform's: no page.
        _case(
            {unavailable: "0x10", unauthenticated: "0+50x10"},
            "TideApiIssuerUnreachable",
            "8m",
            None,
        ),
    ]
    return cases


def _run(tmp_path: Path, cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups(CATALOG)}))
    (tmp_path / "tests.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": cases})
    )
    return subprocess.run(
        [_promtool(), "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups(CATALOG)}))
    result = subprocess.run(
        [_promtool(), "check", "rules", "rules.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_when_it_should_and_stays_quiet_otherwise(tmp_path: Path) -> None:
    cases = _all_cases()
    result = _run(tmp_path, cases)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    declared = {r["alert"] for group in rule_groups(CATALOG) for r in group["rules"]}
    assert tested == declared


def test_a_wrong_expectation_is_reported_by_promtool(tmp_path: Path) -> None:
    # The harness would be worthless if promtool accepted anything: expect a
    # lag alert for a group that is keeping up, and promtool must object.
    group = CATALOG.consumer_groups[0]
    lag = f'kafka_consumergroup_lag{{consumergroup="{group.name}",topic="t",partition="0"}}'
    wrong = _case(
        {lag: "1x30"},
        "TideConsumerGroupLagHigh",
        "15m",
        {"severity": "warning", "consumergroup": group.name},
    )
    result = _run(tmp_path, [wrong])
    assert result.returncode != 0
    assert "TideConsumerGroupLagHigh" in result.stdout + result.stderr


@pytest.mark.parametrize("group", CATALOG.consumer_groups, ids=lambda g: g.name)
def test_alert_summaries_name_the_group(group: ConsumerGroup) -> None:
    rules = next(g for g in rule_groups(CATALOG) if g["name"] == f"tide-group-{group.name}")[
        "rules"
    ]
    assert all(group.name in r["annotations"]["summary"] for r in rules)


def test_the_hastened_rules_differ_from_the_deployed_ones_only_in_their_windows() -> None:
    # tests/chaos/test_alerts.py evaluates these on real metrics; every other part of
    # a rule must be the one Prometheus gets on the cluster.
    deployed = rule_groups(CATALOG)
    fast = hastened(deployed, for_="5s", window="20s")
    assert fast != deployed
    for group, fast_group in zip(deployed, fast, strict=True):
        for rule, fast_rule in zip(group["rules"], fast_group["rules"], strict=True):
            assert fast_rule["for"] == "5s"
            assert "[20s]" in fast_rule["expr"] or "[" not in rule["expr"]
            windows = re.sub(r"\[(5m|1m)\]", "[20s]", rule["expr"])
            assert fast_rule["expr"] == windows
            others = {k: v for k, v in rule.items() if k not in ("for", "expr")}
            assert others == {k: v for k, v in fast_rule.items() if k not in ("for", "expr")}
    assert rule_groups(CATALOG) == deployed  # the deployed rules are left as they were
