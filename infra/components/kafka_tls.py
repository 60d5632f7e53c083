"""The Kafka client listener's TLS on a cloud stack: a CA and certificates from cert-manager.

Strimzi keeps the CA it generates in the Kafka namespace only, and the services
run in another. So the client listener gets its certificate from cert-manager
("Providing your own Kafka listener certificates" in Strimzi's docs), issued
by a CA that cert-manager made: a ClusterIssuer can sign in every namespace,
and every certificate a CA issuer signs carries that CA as `ca.crt` in its
Secret. One such certificate in the apps namespace is where the services and
KEDA read the CA from. No private key passes through Pulumi's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.kafka import CA_SECRET, CLUSTER_NAME, LISTENER_SECRET
from infra.components.upstream import HelmRelease

JETSTACK_REPOSITORY = "https://charts.jetstack.io"
# Ten years for the CA, cert-manager's default (90 days, renewed at two thirds) for the rest.
_CA_DURATION = "87600h"


def cert_manager_chart(name: str, *, namespace: str, version: str) -> HelmRelease:
    """cert-manager with its CRDs; ClusterIssuers keep their secrets in `namespace`."""
    return HelmRelease(
        name=name,
        chart="cert-manager",
        version=version,
        namespace=namespace,
        repository=JETSTACK_REPOSITORY,
        values={
            "crds": {"enabled": True},
            "clusterResourceNamespace": namespace,
            # The chart's startupapicheck is a post-install hook, which Chart v4 skips.
            "startupapicheck": {"enabled": False},
        },
    )


@dataclass(frozen=True, kw_only=True)
class KafkaListenerTlsArgs:
    prefix: str
    data_namespace: str
    apps_namespace: str
    # Where cert-manager keeps ClusterIssuer secrets (its --cluster-resource-namespace).
    issuer_namespace: str


def _certificate(
    name: str, namespace: str, spec: dict[str, object], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        f"certificate-{namespace}-{name}",
        api_version="cert-manager.io/v1",
        kind="Certificate",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace),
        spec=spec,
        opts=opts,
    )


def _cluster_issuer(
    name: str, spec: dict[str, object], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        f"cluster-issuer-{name}",
        api_version="cert-manager.io/v1",
        kind="ClusterIssuer",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=name),
        spec=spec,
        opts=opts,
    )


class KafkaListenerTls(PlatformComponent):
    """A self-signed CA, the listener's certificate, and the CA handed to the clients."""

    def __init__(
        self, name: str, args: KafkaListenerTlsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:kafka:KafkaListenerTls", name, opts)
        child = self.child()
        # ClusterIssuers are cluster-wide: the prefix keeps two stacks in one cluster apart.
        bootstrap_issuer = _cluster_issuer(f"{args.prefix}-selfsigned", {"selfSigned": {}}, child)
        ca_name = f"{args.prefix}-kafka-ca"
        ca = _certificate(
            ca_name,
            args.issuer_namespace,
            {
                "isCA": True,
                "commonName": ca_name,
                "secretName": ca_name,
                "duration": _CA_DURATION,
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "issuerRef": {
                    "name": f"{args.prefix}-selfsigned",
                    "kind": "ClusterIssuer",
                    "group": "cert-manager.io",
                },
            },
            self.child(depends_on=[bootstrap_issuer]),
        )
        issuer = _cluster_issuer(
            ca_name, {"ca": {"secretName": ca_name}}, self.child(depends_on=[ca])
        )
        signed_by = {"name": ca_name, "kind": "ClusterIssuer", "group": "cert-manager.io"}
        data = args.data_namespace
        bootstrap = f"{CLUSTER_NAME}-kafka-bootstrap"
        brokers = f"{CLUSTER_NAME}-kafka-brokers"
        self.listener = _certificate(
            LISTENER_SECRET,
            data,
            {
                "secretName": LISTENER_SECRET,
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                # The names Strimzi's internal listener advertises (useServiceDnsDomain off).
                "dnsNames": [
                    bootstrap,
                    f"{bootstrap}.{data}",
                    f"{bootstrap}.{data}.svc",
                    f"*.{brokers}.{data}.svc",
                    f"*.{brokers}.{data}.svc.cluster.local",
                ],
                "usages": ["server auth", "digital signature", "key encipherment"],
                "issuerRef": signed_by,
            },
            self.child(depends_on=[issuer]),
        )
        # Its key is never used: what clients read from this Secret is `ca.crt`.
        self.client_trust = _certificate(
            CA_SECRET,
            args.apps_namespace,
            {
                "secretName": CA_SECRET,
                "commonName": "kafka-client-trust",
                "privateKey": {"algorithm": "ECDSA", "size": 256},
                "usages": ["client auth"],
                "issuerRef": signed_by,
            },
            self.child(depends_on=[issuer]),
        )
        self.register_outputs({})
