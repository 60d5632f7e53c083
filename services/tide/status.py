"""Where each consumer group stands: members (admin API), lag and retries (its committed
offsets), DLQ."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
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


def offsets_reader(client: dict[str, Any], group: str) -> Consumer:
    """A consumer that reads `group`'s committed offsets and never joins it (it never subscribes).

    Not AdminClient.list_consumer_group_offsets: in librdkafka 2.16 an admin client whose
    OffsetFetch is answered NOT_COORDINATOR (a broker restart, a coordinator moving) hands
    the retry to a consumer group it does not have and dies with SIGSEGV
    (confluentinc/librdkafka#5040). A consumer's own committed() retries through its group.
    """
    return Consumer({**client, "group.id": group, "enable.auto.commit": False})


def _backlog(reader: Consumer, topics: tuple[str, ...], timeout: float) -> dict[str, int]:
    """Records the reader's group has not committed, per `topic/partition` (all, if it never
    committed)."""
    metadata = reader.list_topics(timeout=timeout)
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        if topic in metadata.topics
        for p in sorted(metadata.topics[topic].partitions)
    ]
    if not partitions:
        return {}
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in reader.committed(partitions, timeout=timeout)
    }
    backlog = {}
    for tp in partitions:
        low, high = reader.get_watermark_offsets(tp, timeout=timeout)
        done = committed.get((tp.topic, tp.partition), -1)
        start = done if done >= 0 else low
        backlog[f"{tp.topic}/{tp.partition}"] = max(high - start, 0)
    return backlog


def backlogs(
    client: dict[str, Any], groups: Iterable[ConsumerGroup], *, timeout: float = 10.0
) -> dict[str, int]:
    """Records each group still has to do: uncommitted on its topics plus its retry topics."""
    found = {}
    for group in groups:
        reader = offsets_reader(client, group.name)
        try:
            topics = (*group.topics, *group.retry_topics)
            pending = retrying(functools.partial(_backlog, reader, topics, timeout), timeout)
        finally:
            reader.close()
        found[group.name] = sum(pending.values())
    return found


def group_status(
    client: dict[str, Any], group: ConsumerGroup, *, timeout: float = 10.0
) -> GroupStatus:
    admin = AdminClient(client)
    reader = offsets_reader(client, group.name)
    try:
        described = retrying(
            lambda: admin.describe_consumer_groups([group.name])[group.name].result(
                timeout=timeout
            ),
            timeout,
        )
        lag = retrying(lambda: _backlog(reader, group.topics, timeout), timeout)
        retries = retrying(lambda: _backlog(reader, group.retry_topics, timeout), timeout)
    finally:
        reader.close()
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
