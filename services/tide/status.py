"""Where each consumer group stands, from Kafka's admin API: members, lag, retries, DLQ."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from tide.dlq import DeadLetterQueue
from tide.kafka.transient import retrying
from tide.topology import ConsumerGroup


@dataclass
class GroupStatus:
    group: str
    members: int
    lag: int
    lag_by_partition: dict[str, int] = field(default_factory=dict)
    retry_backlog: int = 0
    dlq_depth: int = 0
    last_dead_letter_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backlog(
    admin: AdminClient, probe: Consumer, group: str, topics: tuple[str, ...], timeout: float
) -> dict[str, int]:
    """Records `group` has not committed, per `topic/partition` (all, if it never committed)."""
    metadata = admin.list_topics(timeout=timeout)
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        if topic in metadata.topics
        for p in sorted(metadata.topics[topic].partitions)
    ]
    if not partitions:
        return {}
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, partitions)])
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in future[group].result(timeout=timeout).topic_partitions
    }
    backlog = {}
    for tp in partitions:
        low, high = probe.get_watermark_offsets(tp, timeout=timeout)
        done = committed.get((tp.topic, tp.partition), -1)
        start = done if done >= 0 else low
        backlog[f"{tp.topic}/{tp.partition}"] = max(high - start, 0)
    return backlog


def backlogs(
    client: dict[str, Any], groups: Iterable[ConsumerGroup], *, timeout: float = 10.0
) -> dict[str, int]:
    """Records each group still has to do: uncommitted on its topics plus its retry topics.

    One admin client and one probe consumer serve every group (callers poll this).
    """
    admin = AdminClient(client)
    probe = Consumer({**client, "group.id": "tide-status.backlogs", "enable.auto.commit": False})
    try:
        found = {}
        for group in groups:
            topics = (*group.topics, *group.retry_topics)
            pending = retrying(
                functools.partial(_backlog, admin, probe, group.name, topics, timeout), timeout
            )
            found[group.name] = sum(pending.values())
        return found
    finally:
        probe.close()


def group_status(
    client: dict[str, Any], group: ConsumerGroup, *, timeout: float = 10.0
) -> GroupStatus:
    admin = AdminClient(client)
    probe = Consumer(
        {**client, "group.id": f"tide-status.{group.name}", "enable.auto.commit": False}
    )
    try:
        described = retrying(
            lambda: admin.describe_consumer_groups([group.name])[group.name].result(
                timeout=timeout
            ),
            timeout,
        )
        lag = retrying(lambda: _backlog(admin, probe, group.name, group.topics, timeout), timeout)
        retries = retrying(
            lambda: _backlog(admin, probe, group.name, group.retry_topics, timeout), timeout
        )
    finally:
        probe.close()
    dlq = DeadLetterQueue(client, group, timeout_s=timeout)
    depth = dlq.depth()
    latest = dlq.show(limit=depth)[-1:] if depth else []
    return GroupStatus(
        group=group.name,
        members=len(described.members),
        lag=sum(lag.values()),
        lag_by_partition=lag,
        retry_backlog=sum(retries.values()),
        dlq_depth=depth,
        last_dead_letter_reason=(f"{latest[0].reason}: {latest[0].error}" if latest else ""),
    )
