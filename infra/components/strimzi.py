"""The Strimzi cluster operator, from its Helm chart at the pinned version."""

from __future__ import annotations

from dataclasses import dataclass

from infra.components.upstream import HelmRelease

# Strimzi publishes its chart as an OCI artifact; the old HTTP repository is deprecated.
STRIMZI_CHART = "oci://quay.io/strimzi-helm/strimzi-kafka-operator"


@dataclass(frozen=True, kw_only=True)
class StrimziOperatorArgs:
    namespace: str
    version: str
    watch_namespaces: list[str]


def strimzi_chart(name: str, args: StrimziOperatorArgs) -> HelmRelease:
    """The CRDs and the cluster operator; it watches the data and apps namespaces."""
    return HelmRelease(
        name=name,
        chart=STRIMZI_CHART,
        version=args.version,
        namespace=args.namespace,
        values={
            "watchNamespaces": args.watch_namespaces,
            "resources": {
                "requests": {"cpu": "100m", "memory": "384Mi"},
                # Helm fills in every key the values leave out, and the chart's default
                # limits.cpu is 1000m; only an explicit null removes it.
                "limits": {"memory": "512Mi", "cpu": None},
            },
        },
    )
