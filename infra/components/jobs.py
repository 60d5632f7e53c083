"""One-shot Jobs that run the Tide image to prepare the platform (migrations, schemas)."""

from __future__ import annotations

import hashlib
import json

import pulumi
import pulumi_kubernetes as k8s

from infra.components.catalog import CatalogMount
from infra.config import Image

# Pods with this label may reach the data namespace (see Namespaces' jobs policy).
JOB_LABELS = {"app.kubernetes.io/part-of": "tide", "tide.dev/component": "job"}

# The Pod Security "restricted" profile, which the apps namespace enforces.
RESTRICTED_CONTAINER = k8s.core.v1.SecurityContextArgs(
    run_as_non_root=True,
    allow_privilege_escalation=False,
    read_only_root_filesystem=True,
    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
    seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
)


def tide_job(
    name: str,
    *,
    namespace: str,
    image: Image,
    command: list[str],
    env_from_secrets: dict[str, tuple[str, str]],
    env: dict[str, pulumi.Input[str]] | None = None,
    catalog: CatalogMount | None = None,
    opts: pulumi.ResourceOptions,
) -> k8s.batch.v1.Job:
    """A Job that Pulumi waits on: the dependents of a migration run only after it succeeded.

    A Job's pod template is immutable, and a finished Job must run again when
    its image or command changes (a new Tide version migrates its schema). So
    the Job's name carries a digest of what it runs: an upgrade creates a new
    Job and Pulumi deletes the old one, an unchanged deploy leaves it be. No
    `ttlSecondsAfterFinished`: a Job Kubernetes deleted by itself would drift
    out of Pulumi's state, and the next `pulumi up` would fail to update it.
    """
    variables = [
        k8s.core.v1.EnvVarArgs(
            name=var,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key)
            ),
        )
        for var, (secret, key) in env_from_secrets.items()
    ]
    if catalog is not None:
        env = {**(env or {}), "TIDE_CATALOG_FILE": catalog.file}
    variables += [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in (env or {}).items()]
    runs = json.dumps(
        {
            "image": image.reference,
            "command": command,
            "secrets": sorted(env_from_secrets.items()),
            # Values known now; an Output (a generated secret) cannot be hashed before it exists.
            "env": {k: v if isinstance(v, str) else "<output>" for k, v in (env or {}).items()},
            # A new catalog (new event schemas, say) is a new Job.
            **({"catalog": catalog.checksum} if catalog is not None else {}),
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(runs.encode()).hexdigest()[:10]
    return k8s.batch.v1.Job(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=f"{name}-{digest}", namespace=namespace, labels=JOB_LABELS
        ),
        spec=k8s.batch.v1.JobSpecArgs(
            backoff_limit=6,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=JOB_LABELS),
                spec=k8s.core.v1.PodSpecArgs(
                    restart_policy="OnFailure",
                    volumes=[catalog.volume()] if catalog is not None else None,
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        run_as_non_root=True, run_as_user=10001, run_as_group=10001
                    ),
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="job",
                            image=image.reference,
                            image_pull_policy=image.pull_policy,
                            args=command,
                            env=variables,
                            volume_mounts=[catalog.volume_mount()] if catalog is not None else None,
                            security_context=RESTRICTED_CONTAINER,
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "50m", "memory": "64Mi"},
                                limits={"memory": "256Mi"},
                            ),
                        )
                    ],
                ),
            ),
        ),
        opts=opts,
    )
