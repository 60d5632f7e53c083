"""The whole platform, composed from components in dependency order."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.components.autoscaling import Autoscaling, AutoscalingArgs
from infra.components.kafka import KafkaCluster, KafkaClusterArgs
from infra.components.kafka_users import KafkaUsers, KafkaUsersArgs
from infra.components.monitoring import Monitoring, MonitoringArgs
from infra.components.namespaces import Namespaces, NamespacesArgs
from infra.components.postgres import Postgres, PostgresArgs
from infra.components.rabbitmq import RabbitMQ, RabbitMQArgs
from infra.components.schema_registry import SchemaRegistry, SchemaRegistryArgs
from infra.components.service import Endpoints, TideService, TideServiceArgs, service_values
from infra.components.strimzi import StrimziOperator, StrimziOperatorArgs
from infra.components.topics import KafkaTopics, KafkaTopicsArgs
from infra.config import StackConfig
from tide.topology import Catalog


@dataclass(frozen=True)
class Platform:
    namespaces: Namespaces
    kafka: KafkaCluster
    registry: SchemaRegistry
    monitoring: Monitoring
    services: dict[str, TideService]


def build(config: StackConfig, catalog: Catalog) -> Platform:
    namespaces = Namespaces(
        "namespaces",
        NamespacesArgs(prefix=config.namespace_prefix, privileged_monitoring=config.node_exporter),
    )
    ns = namespaces.names
    after_namespaces = pulumi.ResourceOptions(depends_on=list(namespaces.resources.values()))

    strimzi = StrimziOperator(
        "strimzi",
        StrimziOperatorArgs(
            namespace=ns.system,
            version=config.versions.strimzi,
            watch_namespaces=[ns.data, ns.apps],
        ),
        opts=after_namespaces,
    )
    kafka = KafkaCluster(
        "kafka",
        KafkaClusterArgs(
            namespace=ns.data,
            apps_namespace=ns.apps,
            settings=config.kafka,
            external_node_ports=config.flavor == "kind",
        ),
        # Custom resources after their operator: on destroy, they go first.
        opts=pulumi.ResourceOptions(depends_on=[strimzi]),
    )
    topics = KafkaTopics(
        "topics",
        KafkaTopicsArgs(
            namespace=ns.data,
            catalog=catalog,
            replication_factor=config.kafka.replication_factor,
            min_insync_replicas=config.kafka.min_insync_replicas,
        ),
        opts=pulumi.ResourceOptions(depends_on=[kafka]),
    )
    users = KafkaUsers(
        "kafka-users",
        KafkaUsersArgs(
            apps_namespace=ns.apps, catalog=catalog, cluster_ca_cert=kafka.cluster_ca_cert
        ),
        opts=pulumi.ResourceOptions(depends_on=[kafka]),
    )
    rabbitmq = RabbitMQ(
        "rabbitmq",
        RabbitMQArgs(
            namespace=ns.data,
            apps_namespace=ns.apps,
            catalog=catalog,
            settings=config.rabbitmq,
            operator_version=config.versions.rabbitmq_cluster_operator,
        ),
        opts=after_namespaces,
    )
    postgres = Postgres(
        "postgres",
        PostgresArgs(
            namespace=ns.data,
            system_namespace=ns.system,
            apps_namespace=ns.apps,
            settings=config.postgres,
            chart_version=config.versions.cloudnative_pg,
            image=config.versions.postgres_image,
            tide_image=config.image,
        ),
        opts=after_namespaces,
    )
    registry = SchemaRegistry(
        "registry",
        SchemaRegistryArgs(
            namespace=ns.data,
            apps_namespace=ns.apps,
            version=config.versions.apicurio_registry,
            postgres_host=postgres.host,
            tide_image=config.image,
        ),
        opts=pulumi.ResourceOptions(depends_on=[postgres.registry_database]),
    )
    autoscaling = Autoscaling(
        "keda",
        AutoscalingArgs(namespace=ns.system, version=config.versions.keda),
        opts=after_namespaces,
    )
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            namespace=ns.monitoring,
            data_namespace=ns.data,
            catalog=catalog,
            version=config.versions.kube_prometheus_stack,
            exposure=config.exposure,
            node_exporter=config.node_exporter,
        ),
        opts=after_namespaces,
    )
    endpoints = Endpoints(
        data_namespace=ns.data,
        monitoring_namespace=ns.monitoring,
        kafka_bootstrap=kafka.bootstrap,
        schema_registry_url=registry.url,
    )
    services = {
        service.name: TideService(
            service.name,
            TideServiceArgs(
                namespace=ns.apps, values=service_values(catalog, service.name, config, endpoints)
            ),
            # Everything a service needs exists and is Ready before its pods start.
            opts=pulumi.ResourceOptions(
                depends_on=[
                    topics,
                    users,
                    rabbitmq,
                    postgres.migrations,
                    registry.registration,
                    autoscaling,
                    monitoring,
                ]
            ),
        )
        for service in catalog.services
    }
    return Platform(
        namespaces=namespaces,
        kafka=kafka,
        registry=registry,
        monitoring=monitoring,
        services=services,
    )
