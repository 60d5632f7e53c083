"""Is the deployed platform Ready? Pure verdicts over the objects the Kubernetes API returns.

`make up` polls these until nothing is left, and when time runs out names what is
not Ready, with the reason its status gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Custom resources Tide creates, and the condition that means Ready for each.
CUSTOM_READY = (
    ("kafka.strimzi.io", "v1beta2", "kafkas", "Ready"),
    ("kafka.strimzi.io", "v1beta2", "kafkatopics", "Ready"),
    ("kafka.strimzi.io", "v1beta2", "kafkausers", "Ready"),
    ("rabbitmq.com", "v1beta1", "rabbitmqclusters", "AllReplicasReady"),
    ("postgresql.cnpg.io", "v1", "clusters", "Ready"),
    ("keda.sh", "v1alpha1", "scaledobjects", "Ready"),
)


@dataclass(frozen=True)
class Pending:
    kind: str
    namespace: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {self.reason}"


def workload_pending(kind: str, obj: dict[str, Any]) -> Pending | None:
    """A Deployment or StatefulSet short of its wanted ready replicas (0 wanted is Ready:
    KEDA may scale a group to zero)."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    field = "availableReplicas" if kind == "Deployment" else "readyReplicas"
    ready = status.get(field) or 0
    if ready >= wanted:
        return None
    return Pending(kind, meta["namespace"], meta["name"], f"{ready}/{wanted} replicas ready")


def condition_pending(kind: str, condition: str, obj: dict[str, Any]) -> Pending | None:
    """A custom resource whose `condition` is not True (or that has no status yet)."""
    meta = obj["metadata"]
    conditions = (obj.get("status") or {}).get("conditions") or []
    for entry in conditions:
        if entry.get("type") == condition:
            if str(entry.get("status")) == "True":
                return None
            why = entry.get("message") or entry.get("reason") or "not true"
            return Pending(kind, meta["namespace"], meta["name"], f"{condition}: {why}")
    return Pending(kind, meta["namespace"], meta["name"], f"no {condition} condition yet")
