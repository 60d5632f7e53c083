"""The Kafka cluster: a KRaft `KafkaNodePool` and `Kafka`, with metrics and the Kafka Exporter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from infra.components.base import PlatformComponent
from infra.config import KafkaSettings

CLUSTER_NAME = "tide"
CLIENT_PORT = 9092
# kind maps these NodePorts to localhost (k8s/kind/cluster.yaml).
EXTERNAL_BOOTSTRAP_NODE_PORT = 30092
EXTERNAL_BROKER_NODE_PORT_BASE = 30093

# pulumi-kubernetes waits for this condition before dependents are created.
WAIT_READY = {"pulumi.com/waitFor": "condition=Ready"}
# The cluster CA's certificate, beside each service's credentials (`ca.crt` in its Secret).
CA_CERT_KEY = "ca.crt"
# Ten years; Strimzi renews its own CA, a CA given to it is renewed by bumping it here
# (strimzi.io/ca-cert-generation) and re-running `pulumi up`.
_CA_VALIDITY_HOURS = 10 * 365 * 24

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
    # PEM of the CA that signs the brokers' certificates; None without TLS.
    cluster_ca_cert: pulumi.Output[str] | None

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
        spec_ca: dict[str, object] = {}
        ca_secrets: list[pulumi.Resource] = []
        self.cluster_ca_cert = None
        if settings.tls:
            self.cluster_ca_cert, ca_secrets = _cluster_ca(name, args.namespace, child)
            spec_ca = {"clusterCa": {"generateCertificateAuthority": False}}
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
                **spec_ca,
            },
            opts=self.child(
                depends_on=[node_pool, metrics, *ca_secrets],
                custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m"),
            ),
        )
        self.bootstrap = f"{CLUSTER_NAME}-kafka-bootstrap.{args.namespace}.svc:{CLIENT_PORT}"
        self.register_outputs({"bootstrap": self.bootstrap})


def _cluster_ca(
    name: str, namespace: str, opts: pulumi.ResourceOptions
) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
    """The cluster CA, made here and given to Strimzi instead of the one it would generate.

    Clients in the services' namespace must trust the brokers' certificates, and
    Strimzi keeps its generated CA in the Kafka namespace only; a CA that the
    program owns can be handed to every client (Strimzi "Installing your own CA
    certificates": secrets `<cluster>-cluster-ca-cert` with `ca.crt` and
    `<cluster>-cluster-ca` with `ca.key`, labelled, generation annotations at 0).
    """
    key = tls.PrivateKey(f"{name}-cluster-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
    cert = tls.SelfSignedCert(
        f"{name}-cluster-ca",
        private_key_pem=key.private_key_pem,
        is_ca_certificate=True,
        subject=tls.SelfSignedCertSubjectArgs(common_name="tide-cluster-ca", organization="tide"),
        validity_period_hours=_CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing", "digital_signature", "key_encipherment"],
        opts=opts,
    )
    labels = {"strimzi.io/kind": "Kafka", "strimzi.io/cluster": CLUSTER_NAME}
    cert_secret = k8s.core.v1.Secret(
        f"{name}-cluster-ca-cert",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=f"{CLUSTER_NAME}-cluster-ca-cert",
            namespace=namespace,
            labels=labels,
            annotations={"strimzi.io/ca-cert-generation": "0"},
        ),
        string_data={CA_CERT_KEY: cert.cert_pem},
        opts=opts,
    )
    key_secret = k8s.core.v1.Secret(
        f"{name}-cluster-ca",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=f"{CLUSTER_NAME}-cluster-ca",
            namespace=namespace,
            labels=labels,
            annotations={"strimzi.io/ca-key-generation": "0"},
        ),
        # The provider marks private_key_pem secret: it stays encrypted in the state.
        string_data={"ca.key": key.private_key_pem},
        opts=opts,
    )
    return cert.cert_pem, [cert_secret, key_secret]
