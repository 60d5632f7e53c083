"""Manual scaling that holds: pause KEDA for the service, then set its replicas; `auto` resumes.

KEDA would undo a plain `kubectl scale` at its next poll. Its ScaledObject
annotation `autoscaling.keda.sh/paused-replicas` pins the Deployment to a count
and stops KEDA's scaling until removed; we also patch the Deployment's scale
so the change is immediate. The plan is pure data (tested without a cluster);
`apply` sends it with the Kubernetes client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tide.topology import Catalog

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


class ScaleRefusedError(ValueError):
    """The request cannot hold: unknown service, or more replicas than partitions."""


@dataclass(frozen=True)
class Patch:
    """A merge patch for one object: `kind` is ScaledObject or Deployment/scale."""

    kind: Literal["ScaledObject", "Deployment/scale"]
    name: str
    namespace: str
    body: dict[str, Any]


def scale_plan(
    catalog: Catalog, service: str, replicas: int | Literal["auto"], namespace: str
) -> list[Patch]:
    known = [s.name for s in catalog.services]
    if service not in known:
        raise ScaleRefusedError(f"unknown service {service!r}; known: {', '.join(known)}")
    groups = catalog.groups_of(service)
    workers = catalog.workers_of(service)
    if not groups and not workers:
        raise ScaleRefusedError(
            f"{service} is not autoscaled; use kubectl scale deployment/{service} --replicas=N"
        )
    if replicas == "auto":
        return [
            Patch(
                "ScaledObject",
                service,
                namespace,
                {"metadata": {"annotations": {PAUSED_REPLICAS: None}}},
            )
        ]
    if replicas < 0:
        raise ScaleRefusedError("replicas must be 0 or more")
    for group in groups:
        partitions = min(catalog.topic(t).partitions for t in group.topics)
        if replicas > partitions:
            raise ScaleRefusedError(
                f"{service}: {replicas} replicas would leave {replicas - partitions} idle; "
                f"group {group.name} reads topics with {partitions} partitions"
            )
    return [
        Patch(
            "ScaledObject",
            service,
            namespace,
            {"metadata": {"annotations": {PAUSED_REPLICAS: str(replicas)}}},
        ),
        Patch("Deployment/scale", service, namespace, {"spec": {"replicas": replicas}}),
    ]


def apply(plan: list[Patch]) -> None:
    """Send the plan to the cluster of the current kubeconfig context."""
    from kubernetes import client, config  # noqa: PLC0415 - only the CLI's scale needs it

    config.load_kube_config()  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi()
    apps = client.AppsV1Api()
    for patch in plan:
        if patch.kind == "ScaledObject":
            custom.patch_namespaced_custom_object(
                "keda.sh", "v1alpha1", patch.namespace, "scaledobjects", patch.name, patch.body
            )
        else:
            apps.patch_namespaced_deployment_scale(patch.name, patch.namespace, patch.body)
