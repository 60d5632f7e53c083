"""Grafana dashboards as JSON documents: a platform overview and a page per service."""

from __future__ import annotations

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


def overview(catalog: Catalog) -> dict[str, Any]:
    groups = "|".join(g.name for g in catalog.consumer_groups)
    dlqs = "|".join(g.dlq_topic.replace(".", "\\\\.") for g in catalog.consumer_groups)
    return _dashboard(
        "tide-overview",
        "Tide / Platform overview",
        [
            (
                "Lag per consumer group",
                f'sum by (consumergroup) (kafka_consumergroup_lag{{consumergroup=~"{groups}"}})',
                "{{consumergroup}}",
                "short",
            ),
            (
                "Members per consumer group",
                f"max by (consumergroup) "
                f'(kafka_consumergroup_members{{consumergroup=~"{groups}"}})',
                "{{consumergroup}}",
                "short",
            ),
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
            (
                "Dead letters (DLQ end offsets)",
                f'sum by (topic) (kafka_topic_partition_current_offset{{topic=~"{dlqs}"}})',
                "{{topic}}",
                "short",
            ),
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
        ]
    for group in catalog.groups_of(name):
        g = group.name
        panels += [
            (
                f"{g}: lag",
                f'sum by (topic) (kafka_consumergroup_lag{{consumergroup="{g}"}})',
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
                f'sum by (queue) (rabbitmq_queue_messages{{queue=~"{worker.queue}|'
                f'{worker.queue}\\\\.dlq"}})',
                "{{queue}}",
                "short",
            )
        )
    return _dashboard(f"tide-{name}", f"Tide / {name}", panels)
