"""Where each consumer group stands, from Kafka's admin API: members, lag, retries, DLQ."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from tide.dlq import DeadLetterQueue
from tide.topology import ConsumerGroup

_T = TypeVar("_T")
_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


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


def _retrying(call: Callable[[], _T], timeout: float) -> _T:
    """Admin calls right after a group or topic appears may meet a loading coordinator."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            # Admin results do not always flag these as retriable; they are.
            transient = error.retriable() or error.code() in _COORDINATOR_MOVING
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # backoff between retries of a broker call, bounded by the deadline


def group_status(
    client: dict[str, Any], group: ConsumerGroup, *, timeout: float = 10.0
) -> GroupStatus:
    admin = AdminClient(client)
    probe = Consumer(
        {**client, "group.id": f"tide-status.{group.name}", "enable.auto.commit": False}
    )
    try:
        described = _retrying(
            lambda: admin.describe_consumer_groups([group.name])[group.name].result(
                timeout=timeout
            ),
            timeout,
        )
        lag = _retrying(lambda: _backlog(admin, probe, group.name, group.topics, timeout), timeout)
        retries = _retrying(
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
