"""Prometheus alert rules, one set per consumer group and queue, generated from the catalog.

The monitoring component ships them as a PrometheusRule; the unit tests run them
through `promtool test rules` to prove each fires, and stays quiet, when it should.
Lag and DLQ depth come from the Kafka Exporter (Strimzi) and RabbitMQ's own
exporter, so they hold even while a service is down.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from infra import dashboards
from tide.metrics import (
    AUTH_REFUSALS_SERIES,
    EVENT_STORE_ERRORS_SERIES,
    OUTBOX_OLDEST_AGE_SERIES,
    PUBLISH_FAILURES_SERIES,
)
from tide.topology import Catalog, ConsumerGroup, Queue


def rule_groups(catalog: Catalog) -> list[dict[str, Any]]:
    """The `groups:` list of a Prometheus rules file."""
    groups = [
        {"name": f"tide-group-{group.name}", "rules": _group_rules(group)}
        for group in catalog.consumer_groups
    ]
    groups += [
        {"name": f"tide-queue-{queue.name}", "rules": _queue_rules(queue)}
        for queue in catalog.queues
    ]
    groups.append({"name": "tide-platform", "rules": _platform_rules()})
    return groups


_RANGE = re.compile(r"\[\d+[smhdwy]\]")


def hastened(groups: list[dict[str, Any]], *, for_: str, window: str) -> list[dict[str, Any]]:
    """The same rules with every `for:` set to `for_` and every range window to `window`.

    Test-only (tests/chaos/test_alerts.py): the deployed windows are minutes, so an alert would take
    that long to fire and, after a `rate(...[5m])`, as long again to resolve. Expressions,
    thresholds, labels and annotations stay exactly as deployed.
    """
    hastened = copy.deepcopy(groups)
    for group in hastened:
        for rule in group["rules"]:
            rule["for"] = for_
            rule["expr"] = _RANGE.sub(f"[{window}]", rule["expr"])
    return hastened


def _alert(
    name: str, *, expr: str, for_: str, severity: str, summary: str, labels: dict[str, str]
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary},
    }


def _group_rules(group: ConsumerGroup) -> list[dict[str, Any]]:
    g = group.name
    lag = f"sum({dashboards.lag(dashboards.one_group(g))})"
    members = f"max(kafka_consumergroup_members{{{dashboards.one_group(g)}}})"
    dlq_end = f'kafka_topic_partition_current_offset{{topic="{group.dlq_topic}"}}'
    labels = {"consumergroup": g}
    if group.autoscaling.min_replicas > 0:
        no_members = f"{members} == 0"
    else:
        # A group KEDA may scale to zero is idle with no members; it is only in
        # trouble when work waits and still nobody comes.
        no_members = (
            f"({members} == 0) and on() ({lag} > {group.autoscaling.activation_lag_threshold})"
        )
    return [
        _alert(
            "TideConsumerGroupLagHigh",
            expr=f"{lag} > {group.alerting.max_lag}",
            for_=group.alerting.lag_for,
            severity="warning",
            summary=f"Consumer group {g} is more than {group.alerting.max_lag} records behind",
            labels=labels,
        ),
        _alert(
            "TideDeadLettersGrowing",
            expr=f"sum(delta({dlq_end}[5m])) > 0",
            for_=group.alerting.dlq_growth_for,
            severity="critical",
            summary=f"Consumer group {g} is dead-lettering records into {group.dlq_topic}",
            labels=labels,
        ),
        _alert(
            "TideConsumerGroupNoMembers",
            expr=no_members,
            for_="5m",
            severity="critical",
            summary=f"Consumer group {g} has no running consumers",
            labels=labels,
        ),
    ]


def _queue_rules(queue: Queue) -> list[dict[str, Any]]:
    return [
        _alert(
            "TideQueueDeadLetters",
            expr=f'max(rabbitmq_queue_messages{{queue="{queue.dlq}"}}) > 0',
            for_="1m",
            severity="critical",
            summary=f"Jobs from {queue.name} exceeded their delivery limit and wait in {queue.dlq}",
            labels={"queue": queue.name},
        )
    ]


def _platform_rules() -> list[dict[str, Any]]:
    return [
        _alert(
            "TidePublishFailures",
            expr=f"sum by (event_type) (rate({PUBLISH_FAILURES_SERIES}[5m])) > 0",
            for_="2m",
            severity="critical",
            summary="Events of type {{ $labels.event_type }} are failing to publish",
            labels={},
        ),
        _alert(
            "TideEventStoreErrors",
            expr=f"sum by (operation) (rate({EVENT_STORE_ERRORS_SERIES}[5m])) > 0",
            for_="2m",
            severity="critical",
            summary="Event store {{ $labels.operation }} operations are failing",
            labels={},
        ),
        _alert(
            "TideOutboxStalled",
            expr=f"max({OUTBOX_OLDEST_AGE_SERIES}) > 120",
            for_="5m",
            severity="critical",
            summary="The oldest unpublished outbox row is more than 2 minutes old",
            labels={},
        ),
        # The APIs answer 503 only when they hold no usable signing key: the issuer's
        # JWKS has been unreachable (or unreadable) past the hour its last keys serve, or
        # since the API started. Every bearer token is refused until it answers again.
        _alert(
            "TideApiIssuerUnreachable",
            # A window shorter than `for`: one 503 (a JWKS blip as a pod starts) never
            # pages; 503s that go on for 2 minutes do.
            expr=f'sum(rate({AUTH_REFUSALS_SERIES}{{status="503"}}[1m])) > 0',
            for_="2m",
            severity="critical",
            summary="The APIs cannot read the token issuer's signing keys and refuse every"
            " bearer token with 503",
            labels={},
        ),
    ]
