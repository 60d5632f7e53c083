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


@dataclass(frozen=True)
class Replicas:
    """A service's replicas as `tide status` shows them: running, wanted, KEDA's ceiling."""

    current: int
    desired: int
    maximum: int | None
    paused_at: str | None = None  # set while `tide scale` holds a manual count

    def __str__(self) -> str:
        text = f"{self.current}/{self.desired}/{'-' if self.maximum is None else self.maximum}"
        return f"{text} (held)" if self.paused_at is not None else text


def replicas_of(
    deployment: dict[str, Any] | None, scaled: dict[str, Any] | None
) -> Replicas | None:
    """From a Deployment and its ScaledObject as the API returns them (camelCase JSON)."""
    if deployment is None:
        return None
    status = deployment.get("status") or {}
    annotations = ((scaled or {}).get("metadata") or {}).get("annotations") or {}
    spec = (scaled or {}).get("spec") or {}
    return Replicas(
        current=int(status.get("readyReplicas") or 0),
        desired=int((deployment.get("spec") or {}).get("replicas", 0)),
        maximum=int(spec["maxReplicaCount"]) if "maxReplicaCount" in spec else None,
        paused_at=annotations.get(PAUSED_REPLICAS),
    )


def cluster_replicas(services: list[str], namespace: str) -> dict[str, Replicas | None]:
    """Replicas per service from the cluster of the current kubeconfig context."""
    from kubernetes import client, config  # noqa: PLC0415 - only with a cluster

    config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    apps = client.AppsV1Api(api)
    custom = client.CustomObjectsApi(api)
    found: dict[str, Replicas | None] = {}
    for service in services:
        try:
            deployment = api.sanitize_for_serialization(  # type: ignore[no-untyped-call]
                apps.read_namespaced_deployment(service, namespace)
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            found[service] = None
            continue
        try:
            scaled = custom.get_namespaced_custom_object(
                "keda.sh", "v1alpha1", namespace, "scaledobjects", service
            )
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            scaled = None
        found[service] = replicas_of(deployment, scaled if isinstance(scaled, dict) else None)
    return found
