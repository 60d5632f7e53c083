"""The whole platform, composed from components in dependency order: `TidePlatform`, the
component a Pulumi program instantiates with its catalog, its image and its settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pulumi

from infra import outputs
from infra.components.api_auth import ApiKeys, ApiKeysArgs
from infra.components.autoscaling import keda_chart
from infra.components.catalog import catalog_config_map, catalog_mount
from infra.components.kafka import KafkaCluster, KafkaClusterArgs
from infra.components.kafka_tls import KafkaListenerTls, KafkaListenerTlsArgs, cert_manager_chart
from infra.components.kafka_users import KafkaUsers, KafkaUsersArgs
from infra.components.monitoring import RELEASE as MONITORING_RELEASE
from infra.components.monitoring import Monitoring, MonitoringArgs
from infra.components.namespaces import NamespaceNames, Namespaces, NamespacesArgs
from infra.components.postgres import Postgres, PostgresArgs, cloudnative_pg_chart
from infra.components.rabbitmq import RabbitMQ, RabbitMQArgs, rabbitmq_operator_manifest
from infra.components.schema_registry import SchemaRegistry, SchemaRegistryArgs
from infra.components.service import Endpoints, TideService, TideServiceArgs, service_values
from infra.components.strimzi import StrimziOperatorArgs, strimzi_chart
from infra.components.topics import KafkaTopics, KafkaTopicsArgs
from infra.components.upstream import (
    CERT_MANAGER_APIS,
    CLOUDNATIVE_PG_APIS,
    KEDA_APIS,
    PROMETHEUS_APIS,
    RABBITMQ_APIS,
    STRIMZI_APIS,
    Operator,
    UpstreamApi,
)
from infra.config import Image, StackConfig
from infra.credentials import Credentials
from tide.topology import Catalog


@dataclass(frozen=True)
class Platform:
    namespaces: Namespaces
    kafka: KafkaCluster
    registry: SchemaRegistry | None
    monitoring: Monitoring
    services: dict[str, TideService]
    # The clients' keys under `api-keys`; None under jwt.
    api_keys: ApiKeys | None


def upstream_operators(
    config: StackConfig, ns: NamespaceNames, opts: pulumi.ResourceOptions | None
) -> dict[str, Operator]:
    """Every upstream operator the stack needs: installed, or (operators external) the
    check of its CRDs. Custom resources depend on these, so destroy removes them first."""
    install = config.operators == "install"
    versions = config.versions
    releases: dict[str, tuple[tuple[UpstreamApi, ...], Callable[[pulumi.ResourceOptions], object]]]
    releases = {
        "strimzi": (
            STRIMZI_APIS,
            strimzi_chart(
                "strimzi",
                StrimziOperatorArgs(
                    namespace=ns.system,
                    version=versions.strimzi,
                    watch_namespaces=[ns.data, ns.apps],
                ),
            ),
        ),
        "rabbitmq-operator": (
            RABBITMQ_APIS,
            rabbitmq_operator_manifest(
                "rabbitmq-operator", version=versions.rabbitmq_cluster_operator
            ),
        ),
        "postgres-operator": (
            CLOUDNATIVE_PG_APIS,
            cloudnative_pg_chart(
                "postgres-operator", namespace=ns.system, version=versions.cloudnative_pg
            ),
        ),
        "keda": (KEDA_APIS, keda_chart("keda", namespace=ns.system, version=versions.keda)),
    }
    if config.kafka.tls:
        releases["cert-manager"] = (
            CERT_MANAGER_APIS,
            cert_manager_chart("cert-manager", namespace=ns.system, version=versions.cert_manager),
        )
    operators = {
        name: Operator(name, apis=apis, install=chart if install else None, opts=opts)
        for name, (apis, chart) in releases.items()
    }
    if not install:
        # kube-prometheus-stack brings Grafana and Prometheus too; only its operator's
        # CRDs are checked here (Monitoring installs the whole stack otherwise).
        operators[MONITORING_RELEASE] = Operator(
            MONITORING_RELEASE, apis=PROMETHEUS_APIS, install=None, opts=opts
        )
    return operators


def build(
    config: StackConfig,
    catalog: Catalog,
    credentials: Credentials,
    parent: pulumi.Resource | None = None,
) -> Platform:
    """Declare the platform; with `parent`, every top-level part is its child, aliased to
    the stack's root where stacks deployed before TidePlatform existed kept it."""
    installs = config.operators == "install"
    aliases = [pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)] if parent is not None else None

    def options(depends_on: Sequence[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(
            parent=parent, depends_on=list(depends_on or []), aliases=aliases
        )

    ns = NamespaceNames.of(config.namespace_prefix)
    namespaces_args = NamespacesArgs(
        prefix=config.namespace_prefix, privileged_monitoring=config.node_exporter
    )
    if installs:
        namespaces = Namespaces("namespaces", namespaces_args, opts=options())
        operators = upstream_operators(
            config, ns, options(depends_on=list(namespaces.resources.values()))
        )
    else:
        # The checks first: a missing or incompatible operator stops `pulumi up` before
        # a single object exists.
        operators = upstream_operators(config, ns, options())
        namespaces = Namespaces(
            "namespaces",
            namespaces_args,
            opts=options(depends_on=list(operators.values())),
        )
    in_namespaces = list(namespaces.resources.values())
    after_namespaces = options(depends_on=in_namespaces)
    strimzi = operators["strimzi"]
    listener_tls: list[pulumi.Resource] = []
    if config.kafka.tls:
        issuer_namespace = ns.system if installs else config.cert_manager_namespace
        listener_tls.append(
            KafkaListenerTls(
                "kafka-tls",
                KafkaListenerTlsArgs(
                    prefix=config.namespace_prefix,
                    data_namespace=ns.data,
                    apps_namespace=ns.apps,
                    issuer_namespace=issuer_namespace,
                ),
                opts=options(depends_on=[operators["cert-manager"], *in_namespaces]),
            )
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
        opts=options(depends_on=[strimzi, *listener_tls, *in_namespaces]),
    )
    topics = KafkaTopics(
        "topics",
        KafkaTopicsArgs(
            namespace=ns.data,
            catalog=catalog,
            replication_factor=config.kafka.replication_factor,
            min_insync_replicas=config.kafka.min_insync_replicas,
        ),
        opts=options(depends_on=[kafka]),
    )
    users = KafkaUsers(
        "kafka-users",
        KafkaUsersArgs(
            apps_namespace=ns.apps,
            catalog=catalog,
            credentials=credentials,
            tls=config.kafka.tls,
        ),
        opts=options(depends_on=[kafka]),
    )
    rabbitmq = RabbitMQ(
        "rabbitmq",
        RabbitMQArgs(
            namespace=ns.data,
            apps_namespace=ns.apps,
            catalog=catalog,
            settings=config.rabbitmq,
            credentials=credentials,
        ),
        opts=options(depends_on=[operators["rabbitmq-operator"], *in_namespaces]),
    )
    # Every Tide pod (and the migrate Job) reads the catalog the program built the platform from.
    mount = catalog_mount(catalog)
    catalog_file = catalog_config_map(
        "catalog", namespace=ns.apps, mount=mount, opts=after_namespaces
    )
    postgres = Postgres(
        "postgres",
        PostgresArgs(
            namespace=ns.data,
            apps_namespace=ns.apps,
            settings=config.postgres,
            image=config.versions.postgres_image,
            tide_image=config.image,
            credentials=credentials,
            catalog=catalog,
            catalog_mount=mount,
            catalog_file=catalog_file,
            registry=config.schema_registry == "deploy",
        ),
        opts=options(depends_on=[operators["postgres-operator"], *in_namespaces]),
    )
    registry = None
    if postgres.registry_database is not None:
        registry = SchemaRegistry(
            "registry",
            SchemaRegistryArgs(
                namespace=ns.data,
                apps_namespace=ns.apps,
                version=config.versions.apicurio_registry,
                postgres_host=postgres.host,
                tide_image=config.image,
                catalog=mount,
            ),
            opts=options(depends_on=[postgres.registry_database, catalog_file]),
        )
    autoscaling = operators["keda"]
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            namespace=ns.monitoring,
            data_namespace=ns.data,
            catalog=catalog,
            version=config.versions.kube_prometheus_stack,
            exposure=config.exposure,
            node_exporter=config.node_exporter,
            # kind's control plane listens on the node's loopback only (kubeadm's default).
            control_plane_metrics=config.flavor != "kind",
            credentials=credentials,
            existing=operators.get(MONITORING_RELEASE),
        ),
        opts=after_namespaces,
    )
    endpoints = Endpoints(
        data_namespace=ns.data,
        monitoring_namespace=ns.monitoring,
        kafka_bootstrap=kafka.bootstrap,
        schema_registry_url=registry.url if registry is not None else None,
    )
    assert config.auth is not None, "StackConfig refuses a stack without tide:auth"
    api_keys = (
        ApiKeys(
            "api-keys",
            ApiKeysArgs(namespace=ns.apps, auth=config.auth, credentials=credentials),
            opts=after_namespaces,
        )
        if config.auth.mode == "api-keys"
        else None
    )
    services = {
        service.name: TideService(
            service.name,
            TideServiceArgs(
                namespace=ns.apps,
                values=service_values(
                    catalog,
                    service.name,
                    config,
                    endpoints,
                    mount,
                    api_keys_checksum=api_keys.checksum if api_keys is not None else None,
                ),
            ),
            # Everything a service needs exists and is Ready before its pods start.
            opts=options(
                depends_on=[
                    catalog_file,
                    topics,
                    users,
                    rabbitmq,
                    postgres.migrations,
                    *([registry.registration] if registry is not None else []),
                    autoscaling,
                    monitoring,
                    *([api_keys] if api_keys is not None else []),
                ]
            ),
        )
        for service in catalog.services
    }
    return Platform(
        api_keys=api_keys,
        namespaces=namespaces,
        kafka=kafka,
        registry=registry,
        monitoring=monitoring,
        services=services,
    )


@dataclass(frozen=True, kw_only=True)
class TidePlatformArgs:
    """What a Pulumi program gives Tide: the platform's catalog, the stack's settings, and
    optionally the image (else `settings.image`) and the credentials (else derived from
    the stack's `tide:credentialSeed`)."""

    catalog: Catalog
    settings: StackConfig
    image: Image | None = None
    credentials: Credentials | None = None


class TidePlatform(pulumi.ComponentResource):
    """The event platform one catalog describes: Kafka, RabbitMQ, PostgreSQL, the registry,
    monitoring, and a Deployment per catalog service with its retry topics, DLQs, users,
    autoscaling and alerts derived.

        platform = TidePlatform("shop", TidePlatformArgs(catalog=..., settings=...))
        pulumi.export("kafkaBootstrap", platform.kafka_bootstrap)
    """

    kafka_bootstrap: pulumi.Output[str]
    """Kafka's bootstrap address inside the cluster (SCRAM listener)."""
    schema_registry_url: pulumi.Output[str] | None
    """The registry's Confluent-compatible URL; None on a stack without one."""
    namespaces: dict[str, str]
    """The namespaces by role: system, data, apps, monitoring (known before deploying)."""
    endpoints: dict[str, str]
    """Where people reach the public API, Grafana and Prometheus, by infra.outputs' names
    (known before deploying)."""
    grafana_admin_password: pulumi.Output[str] | None
    """Grafana's admin password (a secret); None when the cluster's own Grafana is used."""
    api_keys: pulumi.Output[dict[str, str]] | None
    """Each derived API key by client name (a secret); None under jwt."""
    parts: Platform
    """The components, for a program that adds to them."""

    def __init__(
        self, name: str, args: TidePlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:index:Platform", name, None, opts)
        settings = args.settings
        if args.image is not None:
            settings = settings.model_copy(update={"image": args.image})
        credentials = args.credentials or Credentials.from_stack_config()
        self.parts = parts = build(settings, args.catalog, credentials, parent=self)
        names = vars(parts.namespaces.names)
        self.kafka_bootstrap = pulumi.Output.from_input(parts.kafka.bootstrap)
        self.schema_registry_url = (
            pulumi.Output.from_input(parts.registry.url) if parts.registry is not None else None
        )
        self.namespaces = names
        self.endpoints = outputs.endpoint_urls(settings, names, args.catalog)
        password = parts.monitoring.grafana_password
        self.grafana_admin_password = (
            pulumi.Output.secret(password) if password is not None else None
        )
        self.api_keys = parts.api_keys.keys if parts.api_keys is not None else None
        self.register_outputs(
            {
                "apiKeys": self.api_keys,
                "kafkaBootstrap": self.kafka_bootstrap,
                "schemaRegistryUrl": self.schema_registry_url,
                "namespaces": self.namespaces,
                "endpoints": self.endpoints,
                "grafanaAdminPassword": self.grafana_admin_password,
            }
        )
