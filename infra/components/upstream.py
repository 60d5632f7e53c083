"""Upstream operators: installed by Tide, or found already running in the cluster.

Platform teams often run Strimzi, CloudNativePG, KEDA, the RabbitMQ cluster
operator, prometheus-operator and cert-manager cluster-wide. With
`tide:operators: external` Tide installs none of them; it reads the CRDs it
writes objects of instead, and everything else waits for those reads. So a
missing operator stops `pulumi up` with the CRD's name, and a CRD that does
not serve the API version Tide writes stops it with both versions named,
before any object is created. (A preview plans reads instead of failing them.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent


@dataclass(frozen=True)
class UpstreamApi:
    """A custom resource kind Tide writes, at the API version it writes it."""

    group: str
    version: str
    plural: str

    @property
    def crd(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


STRIMZI_APIS = tuple(
    UpstreamApi("kafka.strimzi.io", "v1beta2", plural)
    for plural in ("kafkas", "kafkanodepools", "kafkatopics", "kafkausers")
)
CLOUDNATIVE_PG_APIS = tuple(
    UpstreamApi("postgresql.cnpg.io", "v1", plural) for plural in ("clusters", "databases")
)
RABBITMQ_APIS = (UpstreamApi("rabbitmq.com", "v1beta1", "rabbitmqclusters"),)
KEDA_APIS = tuple(
    UpstreamApi("keda.sh", "v1alpha1", plural)
    for plural in ("scaledobjects", "triggerauthentications")
)
PROMETHEUS_APIS = tuple(
    UpstreamApi("monitoring.coreos.com", "v1", plural)
    for plural in ("servicemonitors", "podmonitors", "prometheusrules")
)
CERT_MANAGER_APIS = tuple(
    UpstreamApi("cert-manager.io", "v1", plural) for plural in ("certificates", "clusterissuers")
)


@dataclass(frozen=True, kw_only=True)
class HelmRelease:
    """An upstream chart at its pinned version; called with options, it installs it."""

    name: str
    chart: str
    version: str
    namespace: str
    # None for a chart given as an OCI reference.
    repository: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, opts: pulumi.ResourceOptions) -> k8s.helm.v4.Chart:
        return k8s.helm.v4.Chart(
            self.name,
            chart=self.chart,
            version=self.version,
            repository_opts=(
                k8s.helm.v4.RepositoryOptsArgs(repo=self.repository) if self.repository else None
            ),
            namespace=self.namespace,
            values=dict(self.values),
            opts=opts,
        )


def unserved(api: UpstreamApi, spec: Any) -> str | None:
    """Why the CRD found in the cluster cannot take Tide's objects, or None when it can."""
    versions = _field(spec, "versions") or []
    served = sorted(str(_field(v, "name")) for v in versions if _field(v, "served"))
    if api.version in served:
        return None
    return (
        f"CustomResourceDefinition {api.crd} serves {', '.join(served) or 'no version'}, "
        f"but Tide writes {api.api_version}: install a compatible operator version"
    )


def _field(value: Any, name: str) -> Any:
    # The provider hands a read resource's spec back as typed outputs; mocks as dicts.
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


class Operator(PlatformComponent):
    """One upstream operator: `install` builds it here; otherwise its CRDs must exist.

    Custom resources depend on this component, so on destroy they go before
    the operator that clears their finalizers.
    """

    def __init__(
        self,
        name: str,
        *,
        apis: Sequence[UpstreamApi],
        install: Callable[[pulumi.ResourceOptions], object] | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tide:upstream:Operator", name, opts)
        if install is not None:
            install(self.child())
            self.register_outputs({})
            return
        checks = []
        for api in apis:
            crd = k8s.apiextensions.v1.CustomResourceDefinition.get(
                f"{name}-{api.plural}", api.crd, opts=self.child()
            )
            checks.append(crd.spec.apply(functools.partial(_require_served, api)))
        # Registering the checks as outputs makes the engine wait for them: a failed
        # check fails the preview or update with its message.
        self.register_outputs({"apis": pulumi.Output.all(*checks)})


def _require_served(api: UpstreamApi, spec: Any) -> str:
    problem = unserved(api, spec)
    if problem is not None:
        raise pulumi.RunError(problem)
    return api.api_version
