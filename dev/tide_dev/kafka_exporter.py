"""Consumer-group lag, members and partition end offsets, under kafka_exporter's names.

On Kubernetes, Strimzi runs its Kafka Exporter (danielqsj/kafka_exporter) and the alert
rules, dashboards and KEDA's views query its series. Off the cluster (`make local`, the
alert tests) that exporter cannot run: the Go module proxy refuses
github.com/danielqsj/kafka_exporter (403 for every version), and the lag exporter on PyPI
(prometheus-kafka-consumer-group-exporter 0.5.5) asks for ListOffsets v0, which Kafka 4
removed (KIP-896). So `tide-dev kafka-exporter` serves the three series the rules use, with
kafka_exporter's metric names, labels and meaning:

- `kafka_topic_partition_current_offset{topic, partition}`: the partition's end offset;
- `kafka_consumergroup_lag{consumergroup, topic, partition}`: end offset minus the group's
  committed offset, for each partition the group has committed on;
- `kafka_consumergroup_members{consumergroup}`: members the coordinator lists.

It reads Kafka at every scrape, as kafka_exporter does, for the catalog's groups and
topics. As kafka_exporter does: a group the coordinator does not know (state DEAD) has no
series; a topic on which a group never committed has no lag series, and a partition of a
topic it consumes with no committed offset yet has lag -1; a group that cannot be read
is logged and left out, the rest are still reported.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from confluent_kafka import ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tide.status import offsets_reader
from tide.topology import Catalog, ConsumerGroup

log = logging.getLogger(__name__)

# Below the scrape timeout `make local` gives this job, so a slow answer is a logged
# failure rather than a scrape Prometheus abandons.
TIMEOUT_S = 1.5
LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


class KafkaExporterCollector(Collector):
    """Collects the three series at each scrape; a scrape that cannot reach Kafka yields
    nothing (the series go stale, as a down exporter's do)."""

    def __init__(self, client: dict[str, Any], catalog: Catalog) -> None:
        self.client = client
        self.groups = list(catalog.consumer_groups)
        self.topics = {str(t.name) for t in catalog.all_topics()}
        self._admin = AdminClient(client)
        # One reader per group, never subscribed (tide.status.offsets_reader).
        self._readers = {g.name: offsets_reader(client, g.name) for g in self.groups}
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:  # Prometheus and a person with curl may scrape at once
            try:
                yield from self._collect()
            except Exception as exc:  # noqa: BLE001 - a failed scrape is an absent scrape
                log.warning("kafka-exporter: scrape failed: %s", exc)

    def _collect(self) -> list[GaugeMetricFamily]:
        metadata = self._admin.list_topics(timeout=TIMEOUT_S)
        partitions = [
            TopicPartition(topic, p)
            for topic, meta in metadata.topics.items()
            if topic in self.topics and meta.error is None
            for p in meta.partitions
        ]
        ends = self._end_offsets(partitions)
        current = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "Current Offset of a Broker at Topic/Partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), end in sorted(ends.items()):
            current.add_metric([topic, str(partition)], end)
        lag = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
            labels=["consumergroup", "topic", "partition"],
        )
        members = GaugeMetricFamily(
            "kafka_consumergroup_members",
            "Amount of members in a consumer group",
            labels=["consumergroup"],
        )
        described = self._admin.describe_consumer_groups(
            [g.name for g in self.groups], request_timeout=TIMEOUT_S
        )
        for group in self.groups:
            try:
                description = described[group.name].result(timeout=TIMEOUT_S)
                if description.state == ConsumerGroupState.DEAD:
                    continue  # not a group Kafka knows: kafka_exporter would not list it
                committed = self._committed(group, ends)
            except Exception as exc:  # noqa: BLE001 - the other groups are still reported
                log.warning("kafka-exporter: group %s: %s", group.name, exc)
                continue
            members.add_metric([group.name], len(description.members))
            for (topic, partition), done in committed.items():
                behind = ends[topic, partition] - done if done >= 0 else -1
                lag.add_metric([group.name, topic, str(partition)], max(behind, -1))
        return [current, lag, members]

    def _end_offsets(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        futures = self._admin.list_offsets(
            dict.fromkeys(partitions, LATEST), request_timeout=TIMEOUT_S
        )
        return {
            (tp.topic, tp.partition): f.result(timeout=TIMEOUT_S).offset
            for tp, f in futures.items()
        }

    def _committed(
        self, group: ConsumerGroup, ends: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int]:
        """The group's committed offset (-1: none) on each partition of the topics it
        consumes."""
        topics = {*group.topics, *group.retry_topics}
        asked = [TopicPartition(t, p) for (t, p) in ends if t in topics]
        if not asked:
            return {}
        found = self._readers[group.name].committed(asked, timeout=TIMEOUT_S)
        # A topic on which the group never committed is not one it consumes (no series);
        # on one it does, a partition with no commit yet reports -1.
        consumed = {tp.topic for tp in found if tp.offset >= 0}
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.topic in consumed}

    def close(self) -> None:
        with self._lock:  # not while a scrape still uses them
            for reader in self._readers.values():
                reader.close()
