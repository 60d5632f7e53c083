"""RabbitMQ: the cluster operator (pinned release manifest), a `RabbitmqCluster`, the topology."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.config import RabbitMQSettings
from infra.credentials import Credentials
from tide.rabbitmq.definitions import definitions
from tide.topology import Catalog

CLUSTER_NAME = "tide-rabbitmq"
AMQP_PORT = 5672
DEFINITIONS_PATH = "/etc/tide/definitions"
DEFINITIONS_SECRET = "rabbitmq-definitions"  # noqa: S105 (a Secret's name)
# The cluster's administrator: the operator's default user, and the management UI's login.
# RabbitMQ seeds no default user when it loads definitions at boot, so the Secret the
# operator would make (`<cluster>-default-user`) would name a user that does not exist.
# Instead the operator is given this Secret (`secretBackend.externalSecret`, which it
# mounts as conf.d's default_user.conf and makes no Secret of its own for), and the same
# user is in the definitions, with every right.
ADMIN_USER = "tide-admin"
ADMIN_SECRET = f"{CLUSTER_NAME}-admin"
TOPOLOGY_ANNOTATION = "tide.dev/topology-digest"
OPERATOR_MANIFEST = (
    "https://github.com/rabbitmq/cluster-operator/releases/download/v{version}/cluster-operator.yml"
)


def rabbitmq_credentials_secret(service: str) -> str:
    """The Secret (in the apps namespace) with a service's AMQP URL."""
    return f"{service}-rabbitmq"


def rabbitmq_operator_manifest(
    name: str, *, version: str
) -> Callable[[pulumi.ResourceOptions], object]:
    """The cluster operator's release manifest (its own namespace, CRD and RBAC)."""

    def install(opts: pulumi.ResourceOptions) -> k8s.yaml.v2.ConfigFile:
        return k8s.yaml.v2.ConfigFile(
            name, file=OPERATOR_MANIFEST.format(version=version), opts=opts
        )

    return install


@dataclass(frozen=True, kw_only=True)
class RabbitMQArgs:
    namespace: str
    apps_namespace: str
    catalog: Catalog
    settings: RabbitMQSettings
    credentials: Credentials


class RabbitMQ(PlatformComponent):
    """Quorum queues with delivery limits and dead-letter policies, loaded as definitions at boot;
    one user per service that uses RabbitMQ, its URL in the services' namespace."""

    cluster: k8s.apiextensions.CustomResource
    secrets: dict[str, k8s.core.v1.Secret]

    def __init__(
        self, name: str, args: RabbitMQArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:rabbitmq:RabbitMQ", name, opts)
        child = self.child()
        host = f"{CLUSTER_NAME}.{args.namespace}.svc"
        users = [s.name for s in args.catalog.services if args.catalog.uses_rabbitmq(s.name)]
        passwords = {user: args.credentials.password(f"rabbitmq/{user}") for user in users}
        self.secrets = {}
        for user, password in passwords.items():
            self.secrets[user] = k8s.core.v1.Secret(
                f"{user}-rabbitmq-credentials",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=rabbitmq_credentials_secret(user), namespace=args.apps_namespace
                ),
                string_data={
                    "url": pulumi.Output.concat(
                        "amqp://", user, ":", password, f"@{host}:{AMQP_PORT}/"
                    ),
                },
                opts=child,
            )
        # RabbitMQ loads definitions at boot only. A digest of the topology (without the
        # passwords) on the pod template rolls the nodes when the catalog changes it, and
        # each node imports the new definitions as it starts (additive: nothing is deleted).
        topology = json.dumps(
            definitions(args.catalog, dict.fromkeys(users, ""), {ADMIN_USER: ""}), sort_keys=True
        )
        topology_digest = hashlib.sha256(topology.encode()).hexdigest()[:12]
        admin_password = args.credentials.password("rabbitmq/admin")
        admin_secret = k8s.core.v1.Secret(
            f"{name}-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=ADMIN_SECRET, namespace=args.namespace),
            # The keys of the Secret the operator would have made (username, password, host,
            # port, and default_user.conf, which its pods mount).
            string_data={
                "username": ADMIN_USER,
                "password": admin_password,
                "host": host,
                "port": str(AMQP_PORT),
                "default_user.conf": pulumi.Output.concat(
                    f"default_user = {ADMIN_USER}\ndefault_pass = ", admin_password, "\n"
                ),
            },
            opts=child,
        )
        document = pulumi.Output.all(admin_password, passwords).apply(
            lambda resolved: json.dumps(
                definitions(args.catalog, resolved[1], {ADMIN_USER: resolved[0]}), indent=2
            )
        )
        definitions_secret = k8s.core.v1.Secret(
            f"{name}-definitions",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=DEFINITIONS_SECRET, namespace=args.namespace),
            string_data={"definitions.json": document},
            opts=child,
        )
        settings = args.settings
        # Storage "0" makes the operator mount an emptyDir, no claim (cluster-operator
        # v2.16.0, internal/resource/statefulset.go): what `ephemeral` asks for.
        persistence: dict[str, object] = {"storage": "0"}
        if settings.storage.type == "persistent-claim":
            persistence = {"storage": settings.storage.size}
            if settings.storage.storage_class:
                persistence["storageClassName"] = settings.storage.storage_class
        self.cluster = k8s.apiextensions.CustomResource(
            name,
            api_version="rabbitmq.com/v1beta1",
            kind="RabbitmqCluster",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CLUSTER_NAME,
                namespace=args.namespace,
                annotations={"pulumi.com/waitFor": "condition=AllReplicasReady"},
            ),
            spec={
                "replicas": settings.replicas,
                "persistence": persistence,
                "secretBackend": {"externalSecret": {"name": ADMIN_SECRET}},
                # Memory request and limit equal: otherwise the operator reports
                # NoWarnings=False ("memory resource request and limit must be equal"), as
                # RabbitMQ sizes its high watermark from the limit, which the node may not have.
                "resources": {
                    "requests": {"cpu": "200m", "memory": "1Gi"},
                    "limits": {"memory": "1Gi"},
                },
                "rabbitmq": {
                    "additionalConfig": "\n".join(
                        [
                            f"load_definitions = {DEFINITIONS_PATH}/definitions.json",
                            # Per-queue metrics: the DLQ-depth alerts need them.
                            "prometheus.return_per_object_metrics = true",
                        ]
                    )
                },
                "override": {
                    "statefulSet": {
                        "spec": {
                            "template": {
                                "metadata": {"annotations": {TOPOLOGY_ANNOTATION: topology_digest}},
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "rabbitmq",
                                            "volumeMounts": [
                                                {
                                                    "name": "definitions",
                                                    "mountPath": DEFINITIONS_PATH,
                                                    "readOnly": True,
                                                }
                                            ],
                                        }
                                    ],
                                    "volumes": [
                                        {
                                            "name": "definitions",
                                            "secret": {"secretName": DEFINITIONS_SECRET},
                                        }
                                    ],
                                },
                            }
                        }
                    }
                },
            },
            opts=self.child(
                depends_on=[definitions_secret, admin_secret],
                custom_timeouts=pulumi.CustomTimeouts(create="15m", update="15m"),
            ),
        )
        self.register_outputs({"host": host})
