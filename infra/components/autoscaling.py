"""KEDA, and the scaler values each service's chart renders into its `ScaledObject`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.kafka import CA_CERT_KEY
from infra.components.kafka_users import kafka_credentials_secret
from infra.components.rabbitmq import rabbitmq_credentials_secret
from tide.topology import Catalog

KEDA_REPOSITORY = "https://kedacore.github.io/charts"


def scaler_values(
    catalog: Catalog, service: str, kafka_bootstrap: str, *, tls: bool = False
) -> dict[str, Any]:
    """The chart's `autoscaling` values: one Kafka lag trigger per topic a group reads
    (KEDA scales to the busiest), or a queue-length trigger for a RabbitMQ worker.
    On a TLS listener KEDA verifies the brokers with the cluster CA from the same Secret."""
    groups = catalog.groups_of(service)
    workers = catalog.workers_of(service)
    if groups:
        bounds = groups[0].autoscaling
        triggers = [
            {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": kafka_bootstrap,
                    "consumerGroup": group.name,
                    "topic": topic,
                    "lagThreshold": str(group.autoscaling.lag_threshold),
                    "activationLagThreshold": str(group.autoscaling.activation_lag_threshold),
                    # A group that never committed still has a backlog: count it.
                    "offsetResetPolicy": "earliest",
                    "allowIdleConsumers": "false",
                },
            }
            for group in groups
            for topic in group.topics
        ]
        authentication = {
            "secretName": kafka_credentials_secret(service),
            "parameters": {
                "sasl": "sasl",
                "username": "username",
                "password": "password",
                "tls": "tls",
                **({"ca": CA_CERT_KEY} if tls else {}),
            },
        }
    elif workers:
        bounds = workers[0].autoscaling
        triggers = [
            {
                "type": "rabbitmq",
                "metadata": {
                    "protocol": "amqp",
                    "queueName": worker.queue,
                    "mode": "QueueLength",
                    "value": str(worker.autoscaling.lag_threshold),
                    "activationValue": str(worker.autoscaling.activation_lag_threshold),
                },
            }
            for worker in workers
        ]
        authentication = {
            "secretName": rabbitmq_credentials_secret(service),
            "parameters": {"host": "url"},
        }
    else:
        return {"enabled": False}
    return {
        "enabled": True,
        "minReplicas": bounds.min_replicas,
        "maxReplicas": max(
            [g.autoscaling.max_replicas for g in groups]
            + [w.autoscaling.max_replicas for w in workers]
        ),
        "triggers": triggers,
        "authentication": authentication,
    }


@dataclass(frozen=True, kw_only=True)
class AutoscalingArgs:
    namespace: str
    version: str


class Autoscaling(PlatformComponent):
    """The KEDA operator; ScaledObjects come with each service's chart."""

    chart: k8s.helm.v4.Chart

    def __init__(
        self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:autoscaling:Autoscaling", name, opts)
        self.chart = k8s.helm.v4.Chart(
            name,
            chart="keda",
            version=args.version,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=KEDA_REPOSITORY),
            namespace=args.namespace,
            opts=self.child(),
        )
        self.register_outputs({})
