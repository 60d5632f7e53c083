"""The platform's namespaces, with Pod Security labels and a default-deny NetworkPolicy."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent


@dataclass(frozen=True, kw_only=True)
class NamespacesArgs:
    prefix: str
    # kube-prometheus-stack's node exporter needs host access: only then is
    # the monitoring namespace privileged.
    privileged_monitoring: bool


@dataclass(frozen=True)
class NamespaceNames:
    system: str
    data: str
    apps: str
    monitoring: str

    @classmethod
    def of(cls, prefix: str) -> NamespaceNames:
        return cls(
            system=f"{prefix}-system",
            data=f"{prefix}-data",
            apps=f"{prefix}-apps",
            monitoring=f"{prefix}-monitoring",
        )


# Pod Security Standards level enforced in each namespace.
_ENFORCE = {
    "system": "baseline",
    "data": "baseline",
    "apps": "restricted",
    "monitoring": "baseline",
}


class Namespaces(PlatformComponent):
    """`<prefix>-system` (operators), `-data` (brokers), `-apps` (services), `-monitoring`."""

    names: NamespaceNames
    resources: dict[str, k8s.core.v1.Namespace]

    def __init__(
        self, name: str, args: NamespacesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:platform:Namespaces", name, opts)
        self.names = NamespaceNames.of(args.prefix)
        enforce = dict(_ENFORCE)
        if args.privileged_monitoring:
            enforce["monitoring"] = "privileged"
        self.resources = {}
        for role, namespace in vars(self.names).items():
            self.resources[role] = k8s.core.v1.Namespace(
                namespace,
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=namespace,
                    labels={
                        "app.kubernetes.io/part-of": "tide",
                        "tide.dev/role": role,
                        "pod-security.kubernetes.io/enforce": enforce[role],
                        "pod-security.kubernetes.io/warn": "restricted",
                    },
                ),
                opts=self.child(),
            )
        # Apps and brokers start from "nothing in, nothing out"; the chart (per
        # service) and the data-namespace policy below open what the catalog needs.
        for role in ("apps", "data"):
            _default_deny(self, role, self.resources[role])
        _data_namespace_ingress(self, self.names, self.resources["data"])
        _jobs_reach_data(self, self.names, self.resources["apps"])
        self.register_outputs({"names": vars(self.names)})


def _default_deny(parent: pulumi.Resource, role: str, namespace: k8s.core.v1.Namespace) -> None:
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[namespace])
    k8s.networking.v1.NetworkPolicy(
        f"{role}-default-deny",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="default-deny", namespace=namespace.metadata.name),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(),
            policy_types=["Ingress", "Egress"],
        ),
        opts=opts,
    )
    k8s.networking.v1.NetworkPolicy(
        f"{role}-allow-dns",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="allow-dns", namespace=namespace.metadata.name),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(),
            policy_types=["Egress"],
            egress=[
                # Port 53 to any destination: a node-local DNS cache listens on the node
                # (a link-local address, host network), not in a kube-system pod.
                k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                    ports=[
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="UDP", port=53),
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=53),
                    ],
                )
            ],
        ),
        opts=opts,
    )


def _from_namespace(name: str) -> k8s.networking.v1.NetworkPolicyPeerArgs:
    return k8s.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": name}
        )
    )


# Ports the services may reach in the data namespace: Kafka (SCRAM listener),
# RabbitMQ AMQP, PostgreSQL, the schema registry.
DATA_PORTS = {"kafka": 9092, "rabbitmq": 5672, "postgres": 5432, "registry": 8080}


def _data_namespace_ingress(
    parent: pulumi.Resource, names: NamespaceNames, namespace: k8s.core.v1.Namespace
) -> None:
    """Brokers talk among themselves, operators manage them, services use their client ports."""
    peer = k8s.networking.v1.NetworkPolicyPeerArgs
    k8s.networking.v1.NetworkPolicy(
        "data-brokers",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="brokers", namespace=namespace.metadata.name),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(),
            policy_types=["Ingress", "Egress"],
            ingress=[
                # Replication, the entity operator, CNPG instances, RabbitMQ peers.
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[peer(pod_selector=k8s.meta.v1.LabelSelectorArgs())]
                ),
                # Operators (Strimzi, CNPG, RabbitMQ) and KEDA's lag and queue queries.
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[_from_namespace(names.system)]
                ),
                # Metrics scrapes.
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[_from_namespace(names.monitoring)]
                ),
                k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    from_=[_from_namespace(names.apps)],
                    ports=[
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=port)
                        for port in DATA_PORTS.values()
                    ],
                ),
            ],
            egress=[
                k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                    to=[peer(pod_selector=k8s.meta.v1.LabelSelectorArgs())]
                ),
                # The entity operator and CNPG's instance manager talk to the API
                # server, whose address is the cluster's business: allow its ports.
                k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                    ports=[
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=443),
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=6443),
                    ]
                ),
            ],
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[namespace]),
    )


def _jobs_reach_data(
    parent: pulumi.Resource, names: NamespaceNames, namespace: k8s.core.v1.Namespace
) -> None:
    """Tide's one-shot Jobs (migrations, schema registration) reach the data namespace."""
    k8s.networking.v1.NetworkPolicy(
        "apps-jobs",
        metadata=k8s.meta.v1.ObjectMetaArgs(name="tide-jobs", namespace=namespace.metadata.name),
        spec=k8s.networking.v1.NetworkPolicySpecArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"tide.dev/component": "job"}),
            policy_types=["Egress"],
            egress=[
                k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                    to=[_from_namespace(names.data)],
                    ports=[
                        k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=port)
                        for port in DATA_PORTS.values()
                    ],
                )
            ],
        ),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[namespace]),
    )
