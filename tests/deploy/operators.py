"""The stack's brokers on this machine, provisioned from the objects the API server holds.

Strimzi, the RabbitMQ cluster operator and CloudNativePG cannot run here. What
each of them would do with Tide's objects is small and well defined, and done
here from the very objects the API server accepted: a topic per `KafkaTopic`,
a SCRAM-SHA-512 user per `KafkaUser` with the password its Secret holds, the
RabbitMQ definitions Secret loaded as the broker loads it at boot, and the
database owner from the `Cluster`'s initdb secret and its managed roles from
theirs. So Tide's containers run
with their rendered credentials, unchanged, and only the in-cluster host names
are pointed at loopback.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from infra.components.kafka import CLIENT_PORT, CLUSTER_NAME
from infra.components.postgres import CLUSTER_NAME as POSTGRES_CLUSTER
from infra.components.postgres import PORT as POSTGRES_PORT
from infra.components.rabbitmq import AMQP_PORT, DEFINITIONS_SECRET
from infra.components.rabbitmq import CLUSTER_NAME as RABBITMQ_CLUSTER

from tests.deploy.apiserver import ApiServer
from tests.harness.served_brokers import (
    make_managed_roles,
    start_together,
    topic_of,
    upsert_scram_users,
)
from tide_dev.kafka import KafkaBroker
from tide_dev.postgres import PostgresServer
from tide_dev.rabbitmq import RabbitMQServer


class StackBrokers:
    """Kafka (with a SCRAM listener), RabbitMQ and PostgreSQL for one deployed stack."""

    def __init__(self, root: Path, api: ApiServer, *, data: str, apps: str) -> None:
        self.api = api
        self.data = data
        self.apps = apps
        self.kafka = KafkaBroker(root / "kafka")
        self.rabbitmq = RabbitMQServer(root / "rabbitmq")
        owner = self._postgres_owner()
        self.postgres = PostgresServer(root / "postgres", password=owner["password"])

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        document = self.api.get({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": name, "namespace": namespace}})  # fmt: skip
        assert document is not None, f"Secret {namespace}/{name} does not exist"
        return {k: base64.b64decode(v).decode() for k, v in (document.get("data") or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, str]:
        document = self.api.get({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": name, "namespace": namespace}})  # fmt: skip
        assert document is not None, f"ConfigMap {namespace}/{name} does not exist"
        return dict(document.get("data") or {})

    def objects(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        resource = self.api.client.resources.get(api_version=api_version, kind=kind)
        return [item.to_dict() for item in resource.get(namespace=namespace).items]

    def _postgres_cluster(self) -> dict[str, Any]:
        (cluster,) = [
            c
            for c in self.objects("postgresql.cnpg.io/v1", "Cluster", self.data)
            if c["metadata"]["name"] == POSTGRES_CLUSTER
        ]
        return cluster

    def _managed_roles(self) -> None:
        make_managed_roles(
            self.postgres, self._postgres_cluster(), lambda name: self.secret(self.data, name)
        )

    def _postgres_owner(self) -> dict[str, str]:
        initdb = self._postgres_cluster()["spec"]["bootstrap"]["initdb"]
        owner = self.secret(self.data, initdb["secret"]["name"])
        # The harness makes its superuser and database under Tide's names.
        assert owner["username"] == initdb["owner"] == "tide"
        assert initdb["database"] == "tide"
        return owner

    def start(self) -> None:
        start_together((self.kafka, self.rabbitmq, self.postgres), stop=self.stop)
        self._managed_roles()
        self._topic_operator()
        self._user_operator()
        self._rabbitmq_definitions()

    def rotate_credentials(self) -> None:
        """What the operators do once `pulumi up` has replaced the Secrets with new passwords:
        Strimzi's User Operator sets each KafkaUser's SCRAM password from its Secret at its
        next reconciliation; CloudNativePG's instance manager sets the owner's password from
        the initdb Secret, and each managed role's from its labelled Secret, when they
        change; RabbitMQ, restarted as the README says,
        loads the definitions, new password hashes included, at boot."""
        self._user_operator()
        self.postgres.set_password(self._postgres_owner()["password"])
        self._managed_roles()
        self.rabbitmq.restart()
        self._rabbitmq_definitions()

    def _rabbitmq_definitions(self) -> None:
        definitions = self.secret(self.data, DEFINITIONS_SECRET)["definitions.json"]
        self.rabbitmq.import_definitions(json.loads(definitions))

    def _topic_operator(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap})
        topics = [
            topic_of(t) for t in self.objects("kafka.strimzi.io/v1beta2", "KafkaTopic", self.data)
        ]
        for future in admin.create_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)

    def _user_operator(self) -> None:
        users = {}
        for user in self.objects("kafka.strimzi.io/v1beta2", "KafkaUser", self.apps):
            ref = user["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
            users[user["metadata"]["name"]] = self.secret(self.apps, ref["name"])[ref["key"]]
        upsert_scram_users(self.kafka.bootstrap, users)

    def loopback(self) -> dict[str, str]:
        """In-cluster `host:port` of each broker -> where it answers here."""
        return {
            f"{CLUSTER_NAME}-kafka-bootstrap.{self.data}.svc:{CLIENT_PORT}": (
                self.kafka.sasl_bootstrap
            ),
            f"{RABBITMQ_CLUSTER}.{self.data}.svc:{AMQP_PORT}": f"127.0.0.1:{self.rabbitmq.port}",
            f"{POSTGRES_CLUSTER}-rw.{self.data}.svc:{POSTGRES_PORT}": (
                f"127.0.0.1:{self.postgres.port}"
            ),
        }

    def stop(self) -> None:
        self.rabbitmq.close()
        self.postgres.stop()
        self.kafka.stop()
