"""A SCRAM-SHA-512 `KafkaUser` per service, with ACLs for exactly its topics and groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.components.kafka import CLUSTER_NAME, WAIT_READY
from infra.credentials import Credentials
from tide.topology import Catalog

SASL_MECHANISM = "SCRAM-SHA-512"


def kafka_credentials_secret(service: str) -> str:
    """The Secret (in the apps namespace) that holds a service's Kafka username and password."""
    return f"{service}-kafka"


def acls(catalog: Catalog, service: str) -> list[dict[str, Any]]:
    """Read on what its groups consume, write on what it produces and its retry/DLQ topics."""
    rules: list[dict[str, Any]] = []
    for topic in catalog.topics_read_by(service):
        rules.append(_acl("topic", topic, ["Describe", "Read"]))
    for topic in catalog.topics_written_by(service):
        rules.append(_acl("topic", topic, ["Describe", "Write"]))
    for group in catalog.groups_of(service):
        rules.append(_acl("group", group.name, ["Describe", "Read"]))
    return rules


# The person at the keyboard: `tide status`, `tide dlq`, `make chaos` from outside the cluster.
OPERATOR = "tide-operator"


def operator_acls() -> list[dict[str, Any]]:
    """Read every topic and group (status, DLQ), write any topic (redrive); no admin rights."""
    return [
        _acl("topic", "*", ["Describe", "Read", "Write", "DescribeConfigs"]),
        _acl("group", "*", ["Describe", "Read"]),
        _acl("cluster", "kafka-cluster", ["Describe"]),
    ]


def uses_kafka(catalog: Catalog, service: str) -> bool:
    return bool(catalog.topics_read_by(service) or catalog.topics_written_by(service))


def _acl(kind: str, name: str, operations: list[str]) -> dict[str, Any]:
    # A cluster resource has only a type; Strimzi reports `name` and `patternType` on
    # it as UnknownFields in the KafkaUser's status.
    resource = {"type": kind}
    if kind != "cluster":
        resource |= {"name": name, "patternType": "literal"}
    return {
        "resource": resource,
        "operations": operations,
        "host": "*",
    }


@dataclass(frozen=True, kw_only=True)
class KafkaUsersArgs:
    apps_namespace: str
    catalog: Catalog
    credentials: Credentials
    # A TLS listener: clients and KEDA verify it with the CA in their own Secret.
    tls: bool


class KafkaUsers(PlatformComponent):
    """Passwords are derived here (Pulumi secrets), stored in the services' namespace and
    handed to the User Operator through `valueFrom`, so no Secret is ever copied."""

    users: dict[str, k8s.apiextensions.CustomResource]
    secrets: dict[str, k8s.core.v1.Secret]

    def __init__(
        self, name: str, args: KafkaUsersArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:kafka:KafkaUsers", name, opts)
        self.users = {}
        self.secrets = {}
        principals = [
            (service.name, acls(args.catalog, service.name))
            for service in args.catalog.services
            if uses_kafka(args.catalog, service.name)
        ]
        for principal, rules in [*principals, (OPERATOR, operator_acls())]:
            password = args.credentials.password(f"kafka/{principal}")
            secret_name = kafka_credentials_secret(principal)
            secret = k8s.core.v1.Secret(
                f"{principal}-kafka-credentials",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=secret_name, namespace=args.apps_namespace
                ),
                string_data={
                    "username": principal,
                    "password": password,
                    "sasl-mechanism": SASL_MECHANISM,
                    # The same facts in the spelling KEDA's Kafka scaler reads.
                    "sasl": "scram_sha512",
                    "tls": "enable" if args.tls else "disable",
                },
                opts=self.child(),
            )
            self.secrets[principal] = secret
            self.users[principal] = k8s.apiextensions.CustomResource(
                f"{principal}-kafka-user",
                api_version="kafka.strimzi.io/v1beta2",
                kind="KafkaUser",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=principal,
                    namespace=args.apps_namespace,
                    labels={"strimzi.io/cluster": CLUSTER_NAME},
                    # Ready once the User Operator has set the SCRAM credentials and ACLs.
                    annotations=WAIT_READY,
                ),
                spec={
                    "authentication": {
                        "type": "scram-sha-512",
                        "password": {
                            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "password"}}
                        },
                    },
                    "authorization": {"type": "simple", "acls": rules},
                },
                opts=self.child(depends_on=[secret]),
            )
        self.register_outputs({"users": list(self.users)})
