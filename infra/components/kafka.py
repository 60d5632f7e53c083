"""The Kafka cluster: a KRaft `KafkaNodePool` and `Kafka`, with metrics and the Kafka Exporter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.config import KafkaSettings

CLUSTER_NAME = "tide"
CLIENT_PORT = 9092
# kind maps these NodePorts to localhost (k8s/kind/cluster.yaml).
EXTERNAL_BOOTSTRAP_NODE_PORT = 30092
EXTERNAL_BROKER_NODE_PORT_BASE = 30093

# pulumi-kubernetes waits for this condition before dependents are created.
WAIT_READY = {"pulumi.com/waitFor": "condition=Ready"}
# On a TLS stack, the CA that signs the client listener's certificate: a Secret in the apps
# namespace that cert-manager writes (infra.components.kafka_tls), `ca.crt` in it.
CA_SECRET = "kafka-listener-ca"  # noqa: S105 - a Secret's name
CA_CERT_KEY = "ca.crt"
# The listener's own certificate and key, in the Kafka namespace.
LISTENER_SECRET = "tide-kafka-listener"  # noqa: S105 - a Secret's name

# Prometheus JMX exporter rules (a ConfigMap Strimzi mounts into the brokers).
_JMX_RULES = (Path(__file__).parent / "kafka_metrics.yaml").read_text()


@dataclass(frozen=True, kw_only=True)
class KafkaClusterArgs:
    namespace: str
    apps_namespace: str
    settings: KafkaSettings
    external_node_ports: bool


class KafkaCluster(PlatformComponent):
    """KRaft brokers with a SCRAM-SHA-512 listener, simple ACLs, topic and user operators."""

    kafka: k8s.apiextensions.CustomResource
    bootstrap: str

    def __init__(
        self, name: str, args: KafkaClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:kafka:KafkaCluster", name, opts)
        child = self.child()
        settings = args.settings
        labels = {"strimzi.io/cluster": CLUSTER_NAME}

        metrics = k8s.core.v1.ConfigMap(
            f"{name}-metrics",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="kafka-metrics", namespace=args.namespace),
            data={"kafka-metrics-config.yml": _JMX_RULES},
            opts=child,
        )
        storage: dict[str, object] = {"type": settings.storage.type}
        if settings.storage.type == "persistent-claim":
            storage |= {"size": settings.storage.size, "deleteClaim": False}
            if settings.storage.storage_class:
                storage["class"] = settings.storage.storage_class
        node_pool = k8s.apiextensions.CustomResource(
            f"{name}-nodes",
            api_version="kafka.strimzi.io/v1beta2",
            kind="KafkaNodePool",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="dual-role", namespace=args.namespace, labels=labels
            ),
            spec={
                "replicas": settings.brokers,
                "roles": ["controller", "broker"],
                "storage": {
                    "type": "jbod",
                    "volumes": [{"id": 0, **storage, "kraftMetadata": "shared"}],
                },
                "resources": {
                    "requests": {"cpu": "250m", "memory": "1Gi"},
                    "limits": {"memory": "2Gi"},
                },
            },
            opts=child,
        )
        listeners: list[dict[str, object]] = [
            {
                "name": "scram",
                "port": CLIENT_PORT,
                "type": "internal",
                "tls": settings.tls,
                "authentication": {"type": "scram-sha-512"},
                # Strimzi's own cluster CA stays internal to the brokers; clients in other
                # namespaces verify this listener with a CA cert-manager hands out to them.
                **(
                    {
                        "configuration": {
                            "brokerCertChainAndKey": {
                                "secretName": LISTENER_SECRET,
                                "certificate": "tls.crt",
                                "key": "tls.key",
                            }
                        }
                    }
                    if settings.tls
                    else {}
                ),
            }
        ]
        if args.external_node_ports:
            listeners.append(
                {
                    "name": "external",
                    "port": 9094,
                    "type": "nodeport",
                    "tls": False,
                    "authentication": {"type": "scram-sha-512"},
                    "configuration": {
                        "bootstrap": {"nodePort": EXTERNAL_BOOTSTRAP_NODE_PORT},
                        "brokers": [
                            {
                                "broker": index,
                                "nodePort": EXTERNAL_BROKER_NODE_PORT_BASE + index,
                                "advertisedHost": "localhost",
                            }
                            for index in range(settings.brokers)
                        ],
                    },
                }
            )
        rf = settings.replication_factor
        self.kafka = k8s.apiextensions.CustomResource(
            name,
            api_version="kafka.strimzi.io/v1beta2",
            kind="Kafka",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CLUSTER_NAME, namespace=args.namespace, annotations=WAIT_READY
            ),
            spec={
                "kafka": {
                    "version": settings.version,
                    "listeners": listeners,
                    "authorization": {"type": "simple"},
                    "config": {
                        "default.replication.factor": rf,
                        "min.insync.replicas": settings.min_insync_replicas,
                        "offsets.topic.replication.factor": rf,
                        "transaction.state.log.replication.factor": rf,
                        "transaction.state.log.min.isr": settings.min_insync_replicas,
                        "share.coordinator.state.topic.replication.factor": rf,
                        "share.coordinator.state.topic.min.isr": settings.min_insync_replicas,
                        # Topics exist because the catalog declares them, never by accident.
                        "auto.create.topics.enable": False,
                    },
                    "metricsConfig": {
                        "type": "jmxPrometheusExporter",
                        "valueFrom": {
                            "configMapKeyRef": {
                                "name": "kafka-metrics",
                                "key": "kafka-metrics-config.yml",
                            }
                        },
                    },
                },
                "entityOperator": {
                    "topicOperator": {"watchedNamespace": args.namespace},
                    # KafkaUsers live beside the services, so their secrets land there.
                    "userOperator": {"watchedNamespace": args.apps_namespace},
                },
                # Consumer-group lag for KEDA's dashboards and the lag alerts.
                "kafkaExporter": {"topicRegex": ".*", "groupRegex": ".*"},
            },
            opts=self.child(
                depends_on=[node_pool, metrics],
                custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m"),
            ),
        )
        self.bootstrap = f"{CLUSTER_NAME}-kafka-bootstrap.{args.namespace}.svc:{CLIENT_PORT}"
        self.register_outputs({"bootstrap": self.bootstrap})
