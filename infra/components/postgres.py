"""PostgreSQL through CloudNativePG: the operator chart, a `Cluster`, credentials, the schema."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.catalog import CatalogMount
from infra.components.jobs import tide_job
from infra.components.upstream import HelmRelease
from infra.config import Image, PostgresSettings
from infra.credentials import Credentials
from tide.store.grants import database_services, privileges, role_name
from tide.topology import Catalog

CLUSTER_NAME = "tide-postgres"
OWNER_SECRET = "tide-postgres-owner"  # noqa: S105 - a Secret's name
# The owner's DSN in the apps namespace: the migrate Job's, and the operator's for
# `tide outbox` and the like. Services connect as their own roles.
APPS_SECRET = "postgres"  # noqa: S105 - a Secret's name
DATABASE = "tide"
OWNER = "tide"
# The schema registry keeps its own database and role: Apicurio's SQL storage
# creates tables (among them `outbox`) that would collide with Tide's.
REGISTRY_DATABASE = "registry"
REGISTRY_ROLE = "registry"
REGISTRY_SECRET = "tide-registry-postgres"  # noqa: S105 - a Secret's name
PORT = 5432
CNPG_REPOSITORY = "https://cloudnative-pg.github.io/charts"
# CloudNativePG reconciles a managed role's password from a Secret with this label.
RELOAD_LABELS = {"cnpg.io/reload": "true"}


def role_secret(service: str) -> str:
    """The data namespace's Secret with a service role's username and password, the managed
    role's passwordSecret (apart from the `tide-postgres-<suffix>` Secrets CloudNativePG
    makes for the cluster, and from the owner's)."""
    return f"tide-postgres-role-{service}"


def postgres_credentials_secret(service: str) -> str:
    """The apps namespace's Secret with the DSN a service connects with, as its own role."""
    return f"{service}-postgres"


@dataclass(frozen=True, kw_only=True)
class PostgresArgs:
    namespace: str
    apps_namespace: str
    settings: PostgresSettings
    image: str
    tide_image: Image
    credentials: Credentials
    # The services get a role each (tide.store.grants); the migrate Job grants from it.
    catalog: Catalog
    catalog_mount: CatalogMount
    catalog_file: pulumi.Resource
    # The schema registry's own role and database (StackConfig.schema_registry).
    registry: bool = True


def cloudnative_pg_chart(name: str, *, namespace: str, version: str) -> HelmRelease:
    """The CloudNativePG operator; it watches every namespace."""
    return HelmRelease(
        name=name,
        chart="cloudnative-pg",
        version=version,
        namespace=namespace,
        repository=CNPG_REPOSITORY,
    )


class Postgres(PlatformComponent):
    """The event store's database; a Job applies Tide's migrations once the cluster is Ready."""

    cluster: k8s.apiextensions.CustomResource
    # None on a stack without a registry.
    registry_database: k8s.apiextensions.CustomResource | None
    host: str
    password: pulumi.Output[str]
    migrations: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:postgres:Postgres", name, opts)
        child = self.child()
        self.password = args.credentials.password("postgres/owner")
        owner = k8s.core.v1.Secret(
            f"{name}-owner",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=OWNER_SECRET, namespace=args.namespace),
            type="kubernetes.io/basic-auth",
            string_data={"username": OWNER, "password": self.password},
            opts=child,
        )
        self.host = f"{CLUSTER_NAME}-rw.{args.namespace}.svc"
        role_secrets: list[k8s.core.v1.Secret] = []
        managed_roles: list[dict[str, object]] = []

        def managed_role(
            resource: str, role: str, secret: str, password: pulumi.Output[str]
        ) -> None:
            """A login role CloudNativePG makes, its password from a Secret it watches."""
            role_secrets.append(
                k8s.core.v1.Secret(
                    resource,
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=secret, namespace=args.namespace, labels=RELOAD_LABELS
                    ),
                    type="kubernetes.io/basic-auth",
                    string_data={"username": role, "password": password},
                    opts=child,
                )
            )
            managed_roles.append(
                {"name": role, "ensure": "present", "login": True,
                 "passwordSecret": {"name": secret}}
            )  # fmt: skip

        def dsn_secret(
            resource: str, secret: str, role: str, password: pulumi.Output[str]
        ) -> k8s.core.v1.Secret:
            """The DSN that connects as `role`, in the apps namespace."""
            dsn = pulumi.Output.concat(
                f"postgresql://{role}:", password, f"@{self.host}:{PORT}/{DATABASE}"
            )
            return k8s.core.v1.Secret(
                resource,
                metadata=k8s.meta.v1.ObjectMetaArgs(name=secret, namespace=args.apps_namespace),
                string_data={"dsn": dsn},
                opts=child,
            )

        if args.registry:
            registry_password = args.credentials.password(f"postgres/{REGISTRY_ROLE}")
            managed_role(f"{name}-registry", REGISTRY_ROLE, REGISTRY_SECRET, registry_password)
        dsn_secrets = []
        for service in database_services(args.catalog):
            # A reserved role name, or a platform table in `tables`, stops the preview.
            privileges(args.catalog, service)
            role = role_name(service)
            password = args.credentials.password(f"postgres/service/{service}")
            managed_role(f"{name}-{service}-role", role, role_secret(service), password)
            dsn_secrets.append(
                dsn_secret(
                    f"{name}-{service}-dsn", postgres_credentials_secret(service), role, password
                )
            )
        apps_secret = dsn_secret(f"{name}-apps-dsn", APPS_SECRET, OWNER, self.password)
        storage: dict[str, object] = {"size": args.settings.storage.size}
        if args.settings.storage.storage_class:
            storage["storageClass"] = args.settings.storage.storage_class
        self.cluster = k8s.apiextensions.CustomResource(
            name,
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=CLUSTER_NAME,
                namespace=args.namespace,
                annotations={"pulumi.com/waitFor": "condition=Ready"},
            ),
            spec={
                "instances": args.settings.instances,
                "imageName": args.image,
                "storage": storage,
                "bootstrap": {
                    "initdb": {
                        "database": DATABASE,
                        "owner": OWNER,
                        "secret": {"name": OWNER_SECRET},
                    }
                },
                **({"managed": {"roles": managed_roles}} if managed_roles else {}),
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"memory": "1Gi"},
                },
            },
            opts=self.child(
                depends_on=[owner, *role_secrets],
                custom_timeouts=pulumi.CustomTimeouts(create="15m", update="15m"),
            ),
        )
        self.registry_database = None
        if args.registry:
            self.registry_database = k8s.apiextensions.CustomResource(
                f"{name}-registry-database",
                api_version="postgresql.cnpg.io/v1",
                kind="Database",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{CLUSTER_NAME}-{REGISTRY_DATABASE}",
                    namespace=args.namespace,
                    # The operator sets status.applied once the database exists.
                    annotations={"pulumi.com/waitFor": "jsonpath={.status.applied}=true"},
                ),
                spec={
                    "name": REGISTRY_DATABASE,
                    "owner": REGISTRY_ROLE,
                    "cluster": {"name": CLUSTER_NAME},
                    "ensure": "present",
                },
                opts=self.child(depends_on=[self.cluster]),
            )
        self.migrations = tide_job(
            f"{name}-migrate",
            namespace=args.apps_namespace,
            image=args.tide_image,
            command=["tide", "db", "migrate", "--grant"],
            env_from_secrets={"TIDE_POSTGRES_DSN": (APPS_SECRET, "dsn")},
            catalog=args.catalog_mount,
            opts=self.child(
                depends_on=[self.cluster, apps_secret, args.catalog_file, *dsn_secrets]
            ),
        )
        self.register_outputs({"host": self.host})
