"""A deployed stack's brokers, served to a real node's pods as its operators would serve them.

Strimzi cannot be had, and CloudNativePG's and the RabbitMQ operator's pods would need
upstream images. So the harness's Kafka, PostgreSQL and RabbitMQ stand where their
brokers would, listening on the host end of the node's link, and the played operators
(tests/harness/played_operators.py) do, before they report an object reconciled, what
its operator does with it: Strimzi's bootstrap Service and a topic per `KafkaTopic`, a
SCRAM-SHA-512 user per `KafkaUser` with the password its Secret holds; CloudNativePG's
read-write Service, the owner's password from the initdb Secret and the managed roles
with theirs; the RabbitMQ
operator's client Service and Tide's definitions loaded. Each Service keeps the name and
port its operator gives it, and its one endpoint is the harness broker. So Tide's pods
run with their rendered addresses and credentials, unchanged.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from infra.components import kafka, postgres, rabbitmq
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.addresses import NODE_PODS
from tests.harness.played_operators import CLOUDNATIVE_PG, RABBITMQ, STRIMZI, Played
from tide_dev.kafka import KafkaBroker
from tide_dev.postgres import PostgresServer
from tide_dev.rabbitmq import RabbitMQServer


class Startable(Protocol):
    def start(self) -> None: ...


def serve(core: client.CoreV1Api, namespace: str, name: str, port: int, target: int,
          address: str) -> None:  # fmt: skip
    """Service `name` at `port`, whose one endpoint is `address`:`target`: what a broker's
    operator makes, pointing at the harness's broker. Already there: left as it is."""
    try:
        core.create_namespaced_service(namespace, {
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "main", "port": port, "targetPort": target}]}})  # type: ignore[arg-type]  # fmt: skip
        client.DiscoveryV1Api(core.api_client).create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address]}],
            "ports": [{"name": "main", "port": target, "protocol": "TCP"}]})  # type: ignore[arg-type]  # fmt: skip
    except ApiException as exc:
        if exc.status != 409:
            raise


def upsert_scram_users(bootstrap: str, users: dict[str, str]) -> None:
    """SCRAM-SHA-512 credentials for `users` (name -> password), as Strimzi's User Operator
    sets them from each KafkaUser's Secret."""
    upserts = [
        UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode()
        )
        for name, password in users.items()
    ]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.alter_user_scram_credentials(upserts).values():  # type: ignore[arg-type]
        future.result(timeout=60)


def start_together(servers: Sequence[Startable], *, stop: Callable[[], None]) -> None:
    """Start `servers` at once, each taking seconds; if any fails, `stop` stops what did
    start, which must not outlive the failure, and the first error is raised."""
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers]
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    if errors:
        stop()
        raise errors[0]


def make_managed_roles(
    server: PostgresServer, cluster: dict[str, Any], secret: Callable[[str], dict[str, str]]
) -> list[str]:
    """What CloudNativePG's instance manager does with a `Cluster`'s managed roles: each a
    login role with the password its `passwordSecret` holds (read by `secret(name)`, in the
    Cluster's namespace). Returns the roles' names."""
    roles = cluster["spec"].get("managed", {}).get("roles", [])
    for role in roles:
        assert role.get("ensure", "present") == "present", role
        assert role.get("login"), role
        credentials = secret(role["passwordSecret"]["name"])
        assert credentials["username"] == role["name"], (credentials["username"], role["name"])
        server.ensure_role(role["name"], credentials["password"])
    return [role["name"] for role in roles]


def topic_of(resource: dict[str, Any]) -> NewTopic:
    """The topic Strimzi's Topic Operator makes for a `KafkaTopic` (one broker here)."""
    spec = resource["spec"]
    return NewTopic(
        spec.get("topicName") or resource["metadata"]["name"],
        num_partitions=spec["partitions"],
        replication_factor=1,
        config={k: str(v) for k, v in spec.get("config", {}).items()},
    )


class ServedBrokers:
    """Kafka, PostgreSQL and RabbitMQ on this machine, behind a stack's broker Services."""

    def __init__(self, workdir: Path, core: client.CoreV1Api, *, address: str, data: str) -> None:
        self.core = core
        self.address = address
        advertised = f"{kafka.CLUSTER_NAME}-kafka-bootstrap.{data}.svc:{kafka.CLIENT_PORT}"
        self.kafka = KafkaBroker(workdir / "kafka", pods=(address, advertised))
        self.postgres = PostgresServer(workdir / "postgres", pods=address, pods_range=NODE_PODS)
        self.rabbitmq = RabbitMQServer(workdir / "rabbitmq", pods=address)

    def start(self) -> None:
        start_together((self.kafka, self.postgres, self.rabbitmq), stop=self.stop)

    def stop(self) -> None:
        self.rabbitmq.close()
        self.postgres.stop()
        self.kafka.stop()

    def played(self) -> tuple[Played, ...]:
        """The played operators' kinds, each doing its operator's work on these brokers."""
        work = {
            "kafkas": self._bootstrap_service,
            "kafkatopics": self._topic,
            "kafkausers": self._user,
            "clusters": self._postgres,
            "rabbitmqclusters": self._rabbitmq,
        }
        return tuple(
            replace(kind, provision=work.get(kind.plural))
            for kind in STRIMZI + CLOUDNATIVE_PG + RABBITMQ
        )

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, namespace).data or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _serve(self, resource: dict[str, Any], name: str, port: int, target: int) -> None:
        """The Service the operator makes for `resource`, in its namespace."""
        namespace = resource["metadata"]["namespace"]
        serve(self.core, namespace, name, port, target, self.address)

    def _bootstrap_service(self, resource: dict[str, Any]) -> None:
        name = f"{resource['metadata']['name']}-kafka-bootstrap"
        self._serve(resource, name, kafka.CLIENT_PORT, self.kafka.pods_port)

    def _topic(self, resource: dict[str, Any]) -> None:
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap})
        for future in admin.create_topics([topic_of(resource)], operation_timeout=30).values():
            try:
                future.result(timeout=60)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def _user(self, resource: dict[str, Any]) -> None:
        namespace = resource["metadata"]["namespace"]
        ref = resource["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        password = self._secret(namespace, ref["name"])[ref["key"]]
        upsert_scram_users(self.kafka.bootstrap, {resource["metadata"]["name"]: password})

    def _postgres(self, resource: dict[str, Any]) -> None:
        initdb = resource["spec"]["bootstrap"]["initdb"]
        owner = self._secret(resource["metadata"]["namespace"], initdb["secret"]["name"])
        # The harness made its superuser and database under Tide's names.
        assert owner["username"] == initdb["owner"] == "tide", owner["username"]
        self.postgres.set_password(owner["password"])
        namespace = resource["metadata"]["namespace"]
        make_managed_roles(self.postgres, resource, lambda name: self._secret(namespace, name))
        service = f"{resource['metadata']['name']}-rw"
        self._serve(resource, service, postgres.PORT, self.postgres.port)

    def _rabbitmq(self, resource: dict[str, Any]) -> None:
        namespace = resource["metadata"]["namespace"]
        definitions = self._secret(namespace, rabbitmq.DEFINITIONS_SECRET)["definitions.json"]
        self.rabbitmq.import_definitions(json.loads(definitions))
        service = resource["metadata"]["name"]
        self._serve(resource, service, rabbitmq.AMQP_PORT, self.rabbitmq.pods_port)
