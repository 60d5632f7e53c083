"""The schema registry: Apicurio Registry on PostgreSQL, serving the Confluent-compatible API."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.catalog import CatalogMount
from infra.components.jobs import RESTRICTED_CONTAINER, tide_job
from infra.components.postgres import PORT, REGISTRY_DATABASE, REGISTRY_SECRET
from infra.config import Image

NAME = "tide-registry"
HTTP_PORT = 8080
IMAGE = "quay.io/apicurio/apicurio-registry"
# Where confluent-kafka's SchemaRegistryClient talks to Apicurio.
CCOMPAT_PATH = "/apis/ccompat/v7"


@dataclass(frozen=True, kw_only=True)
class SchemaRegistryArgs:
    namespace: str
    apps_namespace: str
    version: str
    postgres_host: str
    tide_image: Image
    # The stack's catalog, whose event schemas the Job registers.
    catalog: CatalogMount | None = None


class SchemaRegistry(PlatformComponent):
    """A Deployment and Service; a Job registers every catalog schema, compatibility BACKWARD."""

    url: str
    deployment: k8s.apps.v1.Deployment
    registration: k8s.batch.v1.Job

    def __init__(
        self, name: str, args: SchemaRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:registry:SchemaRegistry", name, opts)
        child = self.child()
        labels = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "tide"}

        def owner(key: str) -> k8s.core.v1.EnvVarSourceArgs:
            return k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=REGISTRY_SECRET, key=key)
            )

        probe = k8s.core.v1.HTTPGetActionArgs
        jdbc_url = f"jdbc:postgresql://{args.postgres_host}:{PORT}/{REGISTRY_DATABASE}"
        self.deployment = k8s.apps.v1.Deployment(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        security_context=k8s.core.v1.PodSecurityContextArgs(run_as_non_root=True),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="registry",
                                image=f"{IMAGE}:{args.version}",
                                ports=[
                                    k8s.core.v1.ContainerPortArgs(
                                        name="http", container_port=HTTP_PORT
                                    )
                                ],
                                env=[
                                    k8s.core.v1.EnvVarArgs(
                                        name="APICURIO_STORAGE_KIND", value="sql"
                                    ),
                                    k8s.core.v1.EnvVarArgs(
                                        name="APICURIO_STORAGE_SQL_KIND", value="postgresql"
                                    ),
                                    k8s.core.v1.EnvVarArgs(
                                        name="APICURIO_DATASOURCE_URL",
                                        value=jdbc_url,
                                    ),
                                    k8s.core.v1.EnvVarArgs(
                                        name="APICURIO_DATASOURCE_USERNAME",
                                        value_from=owner("username"),
                                    ),
                                    k8s.core.v1.EnvVarArgs(
                                        name="APICURIO_DATASOURCE_PASSWORD",
                                        value_from=owner("password"),
                                    ),
                                ],
                                readiness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=probe(path="/health/ready", port="http"),
                                    period_seconds=5,
                                ),
                                liveness_probe=k8s.core.v1.ProbeArgs(
                                    http_get=probe(path="/health/live", port="http"),
                                    initial_delay_seconds=30,
                                ),
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "100m", "memory": "384Mi"},
                                    limits={"memory": "768Mi"},
                                ),
                                security_context=RESTRICTED_CONTAINER,
                                volume_mounts=[
                                    k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp")  # noqa: S108
                                ],
                            )
                        ],
                        # The root filesystem is read-only; Quarkus and Vert.x create their
                        # cache and upload directories under java.io.tmpdir (/tmp) at start.
                        volumes=[
                            k8s.core.v1.VolumeArgs(
                                name="tmp",
                                empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="256Mi"),
                            )
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        service = k8s.core.v1.Service(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAME, namespace=args.namespace, labels=labels),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=labels,
                ports=[
                    k8s.core.v1.ServicePortArgs(name="http", port=HTTP_PORT, target_port="http")
                ],
            ),
            opts=child,
        )
        self.url = f"http://{NAME}.{args.namespace}.svc:{HTTP_PORT}{CCOMPAT_PATH}"
        self.registration = tide_job(
            f"{name}-register",
            namespace=args.apps_namespace,
            image=args.tide_image,
            command=["tide", "registry", "register"],
            env_from_secrets={},
            env={"TIDE_SCHEMA_REGISTRY_URL": self.url},
            catalog=args.catalog,
            opts=self.child(depends_on=[self.deployment, service]),
        )
        self.register_outputs({"url": self.url})
