"""KEDA, and the scaler values each service's chart renders into its `ScaledObject`."""

from __future__ import annotations

from typing import Any

from infra.components.kafka import CA_CERT_KEY, CA_SECRET
from infra.components.kafka_users import kafka_credentials_secret
from infra.components.rabbitmq import rabbitmq_credentials_secret
from infra.components.upstream import HelmRelease
from tide.topology import Catalog

KEDA_REPOSITORY = "https://kedacore.github.io/charts"


def scaler_values(
    catalog: Catalog, service: str, kafka_bootstrap: str, *, tls: bool = False
) -> dict[str, Any]:
    """The chart's `autoscaling` values: one Kafka lag trigger per topic a group reads
    (KEDA scales to the busiest), or a queue-length trigger for a RabbitMQ worker.
    On a TLS listener KEDA verifies the brokers with the listener CA from its own Secret."""
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
                **({"ca": {"secret": CA_SECRET, "key": CA_CERT_KEY}} if tls else {}),
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


def keda_chart(name: str, *, namespace: str, version: str) -> HelmRelease:
    """The KEDA operator and its metrics API server; ScaledObjects come with each service."""
    return HelmRelease(
        name=name, chart="keda", version=version, namespace=namespace, repository=KEDA_REPOSITORY
    )
