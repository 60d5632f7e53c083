"""Grafana dashboards as JSON documents: a platform overview and a page per service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tide.topology import Catalog, Role

_WIDTH = 12
_HEIGHT = 8


def _panel(index: int, title: str, expr: str, legend: str, unit: str = "short") -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {
            "x": (index % 2) * _WIDTH,
            "y": (index // 2) * _HEIGHT,
            "w": _WIDTH,
            "h": _HEIGHT,
        },
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": "A", "expr": expr, "legendFormat": legend}],
    }


def _dashboard(uid: str, title: str, panels: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["tide"],
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "panels": [_panel(i, *spec) for i, spec in enumerate(panels)],
    }


def any_of(names: Iterable[str]) -> str:
    """A PromQL regex (inside a double-quoted string) matching exactly these names."""
    return "|".join(name.replace(".", "\\\\.") for name in names)


def lag(matchers: str) -> str:
    """kafka_consumergroup_lag per partition, of the series the label `matchers` select.
    The exporter marks a partition with no commit yet as -1: that is no records behind."""
    return f"clamp_min(kafka_consumergroup_lag{{{matchers}}}, 0)"


def one_group(group: str) -> str:
    """The label matcher of one consumer group's lag and members series."""
    return f'consumergroup="{group}"'


def group_lag(catalog: Catalog) -> str:
    """Records each consumer group has not committed (its retry topics included), by group."""
    groups = any_of(g.name for g in catalog.consumer_groups)
    matchers = f'consumergroup=~"{groups}"'
    return f"sum by (consumergroup) ({lag(matchers)})"


def group_processed(catalog: Catalog) -> str:
    """Records each group's handlers finish per second, by group."""
    groups = any_of(g.name for g in catalog.consumer_groups)
    return f'sum by (group) (rate(tide_messages_processed_total{{group=~"{groups}"}}[1m]))'


def group_members(catalog: Catalog) -> str:
    groups = any_of(g.name for g in catalog.consumer_groups)
    return f'max by (consumergroup) (kafka_consumergroup_members{{consumergroup=~"{groups}"}})'


def dead_letters(catalog: Catalog) -> str:
    """The end offset of each group's DLQ topic: how many records it ever dead-lettered."""
    dlqs = any_of(g.dlq_topic for g in catalog.consumer_groups)
    return f'sum by (topic) (kafka_topic_partition_current_offset{{topic=~"{dlqs}"}})'


def api_requests(service: str) -> str:
    """Answers per second of an API, by status code."""
    return (
        "sum by (status) "
        f'(rate(tide_api_request_duration_seconds_count{{service="{service}"}}[1m]))'
    )


def api_p99(service: str) -> str:
    return (
        "histogram_quantile(0.99, sum by (le) "
        f'(rate(tide_api_request_duration_seconds_bucket{{service="{service}"}}[1m])))'
    )


def overview(catalog: Catalog) -> dict[str, Any]:
    return _dashboard(
        "tide-overview",
        "Tide / Platform overview",
        [
            ("Lag per consumer group", group_lag(catalog), "{{consumergroup}}", "short"),
            ("Members per consumer group", group_members(catalog), "{{consumergroup}}", "short"),
            ("Processed / s per consumer group", group_processed(catalog), "{{group}}", "ops"),
            (
                "Events published / s",
                "sum by (event_type) (rate(tide_events_published_total[1m]))",
                "{{event_type}}",
                "ops",
            ),
            (
                "Publish failures / s",
                "sum by (event_type) (rate(tide_publish_failures_total[1m]))",
                "{{event_type}}",
                "ops",
            ),
            ("Dead letters (DLQ end offsets)", dead_letters(catalog), "{{topic}}", "short"),
            (
                "Broker messages in / s",
                "sum(rate(kafka_server_brokertopicmetrics_messagesinpersec_total[1m]))",
                "messages in",
                "ops",
            ),
            (
                "RabbitMQ queue depth",
                "sum by (queue) (rabbitmq_queue_messages)",
                "{{queue}}",
                "short",
            ),
            ("Outbox backlog", "max(tide_outbox_backlog)", "rows", "short"),
        ],
    )


def service_page(catalog: Catalog, name: str) -> dict[str, Any]:
    service = catalog.service(name)
    panels: list[tuple[str, str, str, str]] = [
        ("Replicas", f'count(up{{service="{name}"}} == 1)', "ready pods", "short"),
    ]
    if service.role is Role.API:
        panels += [
            (
                "Published / s",
                f'sum by (event_type) (rate(tide_events_published_total{{service="{name}"}}[1m]))',
                "{{event_type}}",
                "ops",
            ),
            (
                "Publish failures / s",
                f'sum by (reason) (rate(tide_publish_failures_total{{service="{name}"}}[1m]))',
                "{{reason}}",
                "ops",
            ),
            ("Answers / s", api_requests(name), "{{status}}", "ops"),
            ("Answer p99", api_p99(name), "p99", "s"),
        ]
    for group in catalog.groups_of(name):
        g = group.name
        panels += [
            (
                f"{g}: lag",
                f"sum by (topic) ({lag(one_group(g))})",
                "{{topic}}",
                "short",
            ),
            (
                f"{g}: processed / s",
                f'sum(rate(tide_messages_processed_total{{group="{g}"}}[1m]))',
                "processed",
                "ops",
            ),
            (
                f"{g}: retried and dead-lettered / s",
                f'sum(rate(tide_messages_retried_total{{group="{g}"}}[1m])) + '
                f'sum(rate(tide_messages_dead_lettered_total{{group="{g}"}}[1m]))',
                "retried + DLQ",
                "ops",
            ),
            (
                f"{g}: handler p99",
                "histogram_quantile(0.99, sum by (le) "
                f'(rate(tide_handler_duration_seconds_bucket{{group="{g}"}}[5m])))',
                "p99",
                "s",
            ),
        ]
    for worker in catalog.workers_of(name):
        panels.append(
            (
                f"{worker.queue}: depth",
                "sum by (queue) (rabbitmq_queue_messages"
                f'{{queue=~"{any_of([worker.queue, worker.queue + ".dlq"])}"}})',
                "{{queue}}",
                "short",
            )
        )
    return _dashboard(f"tide-{name}", f"Tide / {name}", panels)
