"""A real node joins the harness cluster: pods run on it, find a broker by its Service's name
through CoreDNS and kube-proxy, and the host is left as found."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import aio_pika
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
from infra.components import kafka, postgres, rabbitmq
from kubernetes import client

from tests.harness import cluster_dns
from tests.harness.addresses import DNS_SERVICE_IP, NODE_LINK_HOST, NODE_PODS
from tests.harness.node import PAUSE_IMAGE
from tests.harness.served_brokers import serve, upsert_scram_users
from tests.node.conftest import NODE, NodeCluster, python_in_pod
from tests.reports import NODE as NODE_REPORT
from tests.reports import report
from tide.waiting import wait_until
from tide_dev.kafka import KafkaBroker
from tide_dev.postgres import PostgresServer
from tide_dev.rabbitmq import RabbitMQServer

pytestmark = pytest.mark.timeout(900)
# Where the program's brokers are in a cluster: CloudNativePG's read-write Service and
# Strimzi's bootstrap Service, in the data namespace, at the ports the program renders.
NAMESPACE = "tide-data"
POSTGRES_SERVICE = f"{postgres.CLUSTER_NAME}-rw"
KAFKA_SERVICE = f"{kafka.CLUSTER_NAME}-kafka-bootstrap"
# The RabbitMQ cluster operator's client Service is the cluster's own name.
RABBITMQ_SERVICE = rabbitmq.CLUSTER_NAME
KAFKA_USER, KAFKA_PASSWORD = "node-test", "node-test-password"
TOPIC = "node-test"
PAUSE_POD = "p"


@dataclass(frozen=True)
class Joined:
    core: client.CoreV1Api
    postgres: PostgresServer
    kafka: KafkaBroker
    rabbitmq: RabbitMQServer


@pytest.fixture(scope="module")
def joined(shared_node: NodeCluster) -> Iterator[Joined]:
    """A cluster whose one node is real, with cluster DNS, and the harness's PostgreSQL,
    Kafka and RabbitMQ behind the Services the program names; the namespace and the pause
    pod taken away after, for the stacks that come onto the node next."""
    workdir = shared_node.workdir
    core = client.CoreV1Api(shared_node.api)
    database = PostgresServer(workdir / "postgres", pods=NODE_LINK_HOST, pods_range=NODE_PODS)
    advertised = f"{KAFKA_SERVICE}.{NAMESPACE}.svc:{kafka.CLIENT_PORT}"
    broker = KafkaBroker(workdir / "kafka", pods=(NODE_LINK_HOST, advertised))
    queues = RabbitMQServer(workdir / "rabbitmq", pods=NODE_LINK_HOST)
    try:
        database.start()
        broker.start()
        queues.start()
        _kafka_user_and_topic(broker)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        _serve(core, POSTGRES_SERVICE, postgres.PORT, database.port)
        _serve(core, KAFKA_SERVICE, kafka.CLIENT_PORT, broker.pods_port)
        _serve(core, RABBITMQ_SERVICE, rabbitmq.AMQP_PORT, queues.pods_port)
        yield Joined(core, database, broker, queues)
    finally:
        # A failed test may have made neither.
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(PAUSE_POD, "default", grace_period_seconds=0)
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(NAMESPACE)
        queues.close()
        broker.stop()
        database.stop()


def _kafka_user_and_topic(broker: KafkaBroker) -> None:
    """A SCRAM user, as Strimzi's User Operator makes one, and a topic to write to."""
    upsert_scram_users(broker.bootstrap, {KAFKA_USER: KAFKA_PASSWORD})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        future.result(timeout=60)


def _serve(core: client.CoreV1Api, name: str, port: int, target: int) -> None:
    """Service `name` in NAMESPACE, whose one endpoint is `target` on the host end of the
    node's link: what the broker an operator runs would be, played by the harness's."""
    serve(core, NAMESPACE, name, port, target, NODE_LINK_HOST)


def test_a_pod_runs_on_the_real_node_with_an_address_from_the_pod_range(
    joined: Joined,
) -> None:
    container = {"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
    spec = {"nodeName": NODE, "containers": [container]}
    joined.core.create_namespaced_pod("default", {"metadata": {"name": PAUSE_POD}, "spec": spec})

    def running() -> bool:
        status = joined.core.read_namespaced_pod(PAUSE_POD, "default").status
        statuses = status.container_statuses or []
        return bool(status.pod_ip) and bool(statuses) and all(s.ready for s in statuses)

    wait_until(running, timeout=120, interval=1, what="the pod Running on the real node")
    pod_ip = joined.core.read_namespaced_pod(PAUSE_POD, "default").status.pod_ip
    assert pod_ip.startswith(NODE_PODS.rsplit(".", 1)[0] + ".")


def test_cluster_dns_runs_on_the_node_and_passes_its_probes(joined: Joined) -> None:
    (pod,) = joined.core.list_namespaced_pod(
        cluster_dns.NAMESPACE, label_selector="k8s-app=kube-dns"
    ).items
    assert pod.spec.node_name == NODE
    assert all(s.ready for s in pod.status.container_statuses)
    (ready,) = [c for c in pod.status.conditions if c.type == "Ready"]
    took = (ready.last_transition_time - pod.metadata.creation_timestamp).total_seconds()
    report(
        NODE_REPORT, f"CoreDNS pod Ready (its readiness probe passed) {took:.0f} s after creation"
    )
    service = joined.core.read_namespaced_service("kube-dns", cluster_dns.NAMESPACE)
    assert service.spec.cluster_ip == DNS_SERVICE_IP


def test_tides_image_reaches_postgres_by_its_service_name(joined: Joined) -> None:
    """From a pod of Tide's image: the Service's name resolves through CoreDNS to its
    ClusterIP, kube-proxy carries the connection to the host's PostgreSQL, and the server
    sees the pod's own address (no translation on the way, as in a cluster)."""
    host = f"{POSTGRES_SERVICE}.{NAMESPACE}.svc"
    script = (
        "import socket, psycopg\n"
        f"print(socket.gethostbyname({host!r}))\n"
        f"dsn = 'postgresql://tide:{joined.postgres.password}@{host}:{postgres.PORT}/tide'\n"
        "with psycopg.connect(dsn, connect_timeout=10) as conn:\n"
        "    print(conn.execute('SELECT host(inet_client_addr())').fetchone()[0])\n"
    )
    log = python_in_pod(joined.core, "reach-postgres", script)
    cluster_ip = joined.core.read_namespaced_service(POSTGRES_SERVICE, NAMESPACE).spec.cluster_ip
    pod_ip = joined.core.read_namespaced_pod("reach-postgres", "default").status.pod_ip
    assert log.split() == [cluster_ip, pod_ip]


def test_a_name_outside_the_cluster_does_not_resolve(joined: Joined) -> None:
    """No upstream resolver: a pod cannot reach anything outside by name."""
    script = (
        "import socket\n"
        "try:\n"
        "    print(socket.gethostbyname('pypi.org'))\n"
        "except socket.gaierror as exc:\n"
        "    print('unresolved', exc.errno)\n"
    )
    log = python_in_pod(joined.core, "reach-outside", script)
    assert log.startswith("unresolved"), log


def test_tides_image_writes_to_kafka_through_its_bootstrap_service(joined: Joined) -> None:
    """From a pod of Tide's image, with SCRAM over the bootstrap Service's name: the broker
    advertises that name back, so every connection the client makes goes the same way,
    and the record lands."""
    config = {
        "bootstrap.servers": f"{KAFKA_SERVICE}.{NAMESPACE}.svc:{kafka.CLIENT_PORT}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": KAFKA_USER,
        "sasl.password": KAFKA_PASSWORD,
    }
    script = (
        "import confluent_kafka\n"
        f"producer = confluent_kafka.Producer({config!r})\n"
        f"producer.produce({TOPIC!r}, key=b'node', value=b'from a pod')\n"
        "assert producer.flush(60) == 0, 'not delivered'\n"
        "print('delivered')\n"
    )
    log = python_in_pod(joined.core, "reach-kafka", script)
    assert log.split() == ["delivered"], log
    consumer = Consumer({"bootstrap.servers": joined.kafka.bootstrap, "group.id": "node-test",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        consumer.subscribe([TOPIC])
        received: list[bytes] = []

        def landed() -> bool:
            message = consumer.poll(1)
            if message is not None and message.error() is None:
                received.append(message.value())
            return bool(received)

        wait_until(landed, timeout=60, interval=0, what="the pod's record read back on the host")
    finally:
        consumer.close()
    assert received == [b"from a pod"]


def test_tides_image_publishes_to_rabbitmq_through_its_service(joined: Joined) -> None:
    """From a pod of Tide's image, with aio-pika over the operator's Service name."""
    user, password = joined.rabbitmq.login
    url = f"amqp://{user}:{password}@{RABBITMQ_SERVICE}.{NAMESPACE}.svc:{rabbitmq.AMQP_PORT}/"
    script = (
        "import asyncio, aio_pika\n"
        "async def main():\n"
        f"    connection = await aio_pika.connect({url!r}, timeout=30)\n"
        "    async with connection:\n"
        "        channel = await connection.channel(publisher_confirms=True)\n"
        "        await channel.declare_queue('node-test', durable=True)\n"
        "        message = aio_pika.Message(b'from a pod', delivery_mode=2)\n"
        "        await channel.default_exchange.publish(message, routing_key='node-test')\n"
        "    print('published')\n"
        "asyncio.run(main())\n"
    )
    log = python_in_pod(joined.core, "reach-rabbitmq", script)
    assert log.split() == ["published"], log

    async def read_back() -> bytes:
        connection = await aio_pika.connect(joined.rabbitmq.url, timeout=30)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("node-test", durable=True)
            message = await queue.get(timeout=30, fail=True)
            assert message is not None
            await message.ack()
            return bytes(message.body)

    assert asyncio.run(read_back()) == b"from a pod"
