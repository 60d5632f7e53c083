"""A `KafkaTopic` for every catalog topic and every group's retry and DLQ topics."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.kafka import CLUSTER_NAME, WAIT_READY
from tide.topology import Catalog


@dataclass(frozen=True, kw_only=True)
class KafkaTopicsArgs:
    namespace: str
    catalog: Catalog
    replication_factor: int
    min_insync_replicas: int


class KafkaTopics(PlatformComponent):
    """Topics depend on the Kafka cluster (and so on the operator): destroy removes them
    first, while the topic operator still runs to clear its finalizers."""

    topics: dict[str, k8s.apiextensions.CustomResource]

    def __init__(
        self, name: str, args: KafkaTopicsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:kafka:KafkaTopics", name, opts)
        self.topics = {}
        for topic in args.catalog.all_topics():
            self.topics[topic.name] = k8s.apiextensions.CustomResource(
                f"topic-{topic.name}",
                api_version="kafka.strimzi.io/v1beta2",
                kind="KafkaTopic",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=topic.name,
                    namespace=args.namespace,
                    labels={"strimzi.io/cluster": CLUSTER_NAME},
                    # Pulumi awaits a custom resource only when asked: services start
                    # after the Topic Operator has made the topic, not before.
                    annotations={"tide.dev/description": topic.description, **WAIT_READY},
                ),
                spec={
                    "partitions": topic.partitions,
                    "replicas": args.replication_factor,
                    "config": {
                        **topic.config(),
                        "min.insync.replicas": str(args.min_insync_replicas),
                    },
                },
                opts=self.child(),
            )
        self.register_outputs({"topics": list(self.topics)})
