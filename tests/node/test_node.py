"""A real node joins the harness cluster: pods run on it, find a broker by its Service's name
through CoreDNS and kube-proxy, and the host is left as found."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from infra.components import kafka, postgres, rabbitmq
from kubernetes import client
from kubernetes import config as kube_config

from tests.harness import cluster_dns
from tests.harness.addresses import DNS_SERVICE_IP, NODE_LINK_HOST, NODE_PODS
from tests.harness.cluster import Cluster
from tests.harness.controlplane import binary
from tests.harness.diagnostics import describe_pods
from tests.harness.docker import docker, service_image
from tests.harness.images import pause_image
from tests.harness.kafka import KafkaBroker
from tests.harness.node import KUBELET_SYSCTLS, PAUSE_IMAGE, Node, sysctl
from tests.harness.postgres import PostgresServer
from tests.harness.rabbitmq import RabbitMQServer
from tests.reports import NODE as NODE_REPORT
from tests.reports import report
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(900)
NODE = "tide-node"
TIDE_IMAGE = "tide:node"
# Where the program's brokers are in a cluster: CloudNativePG's read-write Service and
# Strimzi's bootstrap Service, in the data namespace, at the ports the program renders.
NAMESPACE = "tide-data"
POSTGRES_SERVICE = f"{postgres.CLUSTER_NAME}-rw"
KAFKA_SERVICE = f"{kafka.CLUSTER_NAME}-kafka-bootstrap"
# The RabbitMQ cluster operator's client Service is the cluster's own name.
RABBITMQ_SERVICE = rabbitmq.CLUSTER_NAME
KAFKA_USER, KAFKA_PASSWORD = "node-test", "node-test-password"
TOPIC = "node-test"

NODE_MOUNTS = ("/var/lib/kubelet", "/run/netns/", "/var/lib/cni", "/run/containerd/runc/k8s.io")


def _host_state() -> dict[str, object]:
    """What a node may change on the host."""

    def ip(*args: str) -> str:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

    paths = ("/var/lib/kubelet", "/var/log/pods", "/var/lib/cni", "/run/tide-node")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "sysctls": {name: sysctl(name) for name in KUBELET_SYSCTLS},
        # The node's own link and routes (Docker's containers come and go beside the test).
        "links": sorted(
            p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith("tn")
        ),
        "routes": [r for r in ip("route").splitlines() if "203.0.113." in r or " tn" in r],
        "netns": ip("netns", "list"),
        # Mount points the node's runtime could leave, by name: other users of the machine
        # (Docker's containers, for one) mount and unmount elsewhere while the test runs.
        "mounts": [m for m in mounts if "tide-node" in m or m.startswith(NODE_MOUNTS)],
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/tide-node-*")),
        "paths": [p for p in paths if Path(p).exists()],
    }


@dataclass(frozen=True)
class Joined:
    core: client.CoreV1Api
    postgres: PostgresServer
    kafka: KafkaBroker
    rabbitmq: RabbitMQServer


@pytest.fixture(scope="module")
def tide_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tide's image as a `docker save` archive the node imports."""
    archive = tmp_path_factory.mktemp("images") / "tide.tar"
    with service_image(TIDE_IMAGE) as image:
        docker("save", "--output", str(archive), image, timeout=300)
    return archive


@pytest.fixture(scope="module")
def joined(tide_archive: Path) -> Iterator[Joined]:
    """A cluster whose one node is real, with cluster DNS, and a PostgreSQL on the host
    behind the Service the program names; the host state is checked once all is gone."""
    Node.restore_all()  # what a killed run left: a second run starts clean
    before = _host_state()
    with tempfile.TemporaryDirectory(prefix="tide-node-") as directory:
        workdir = Path(directory)
        workdir.chmod(0o755)  # the brokers run as their own users
        (workdir / "node").mkdir()
        node = Node(workdir / "node", name=NODE, kubelet=binary("kubelet"),
                    kube_proxy=binary("kube-proxy"))  # fmt: skip
        # The API server listens on the host end of the node's link: the link comes first.
        node.prepare()
        try:
            with Cluster(workdir / "cluster", nodes=0, address=NODE_LINK_HOST) as cluster:
                images = [pause_image(PAUSE_IMAGE, workdir),
                          cluster_dns.coredns_image(workdir), tide_archive]  # fmt: skip
                node.start(images, admin=cluster.kubeconfig, certs=workdir / "cluster" / "certs")
                api = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
                cluster_dns.deploy(api, NODE)
                core = client.CoreV1Api(api)
                database = PostgresServer(workdir / "postgres", pods=NODE_LINK_HOST)
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
                    queues.close()
                    broker.stop()
                    database.stop()
        finally:
            node.stop()
    assert _host_state() == before, "the node left the host changed"


def _kafka_user_and_topic(broker: KafkaBroker) -> None:
    """A SCRAM user, as Strimzi's User Operator makes one, and a topic to write to."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    upsert = UserScramCredentialUpsertion(
        KAFKA_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), KAFKA_PASSWORD.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=60)
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        future.result(timeout=60)


def _serve(core: client.CoreV1Api, name: str, port: int, target: int) -> None:
    """Service `name` in NAMESPACE, whose one endpoint is `target` on the host end of the
    node's link: what the broker an operator runs would be, played by the harness's."""
    core.create_namespaced_service(NAMESPACE, {
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "main", "port": port, "targetPort": target}]}})  # fmt: skip
    client.DiscoveryV1Api(core.api_client).create_namespaced_endpoint_slice(NAMESPACE, {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [NODE_LINK_HOST]}],
        "ports": [{"name": "main", "port": target, "protocol": "TCP"}]})  # fmt: skip


def _python(core: client.CoreV1Api, name: str, script: str) -> str:
    """`script` run by the Python of Tide's image, in a pod on the real node; its output."""
    main = {"name": "main", "image": TIDE_IMAGE, "imagePullPolicy": "Never",
            "command": ["python", "-c", script]}  # fmt: skip
    core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": {
        "nodeName": NODE, "restartPolicy": "Never", "containers": [main]}})  # fmt: skip

    def finished() -> bool:
        phase = core.read_namespaced_pod(name, "default").status.phase
        return phase in ("Succeeded", "Failed")

    try:
        wait_until(finished, timeout=180, interval=1, what=f"pod {name} finished on the real node")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{describe_pods(core, 'default')}") from exc
    pod = core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Succeeded", f"pod {name} failed:\n{describe_pods(core, 'default')}"
    (container,) = pod.status.container_statuses
    started = container.state.terminated.started_at - pod.metadata.creation_timestamp
    report(NODE_REPORT, f"pod {name} ({container.image}): container started "
                 f"{started.total_seconds():.0f} s after the pod was created")  # fmt: skip
    return str(core.read_namespaced_pod_log(name, "default"))


def test_a_pod_runs_on_the_real_node_with_an_address_from_the_pod_range(
    joined: Joined,
) -> None:
    container = {"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}
    spec = {"nodeName": NODE, "containers": [container]}
    joined.core.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": spec})

    def running() -> bool:
        status = joined.core.read_namespaced_pod("p", "default").status
        statuses = status.container_statuses or []
        return bool(status.pod_ip) and bool(statuses) and all(s.ready for s in statuses)

    wait_until(running, timeout=120, interval=1, what="the pod Running on the real node")
    pod_ip = joined.core.read_namespaced_pod("p", "default").status.pod_ip
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
    log = _python(joined.core, "reach-postgres", script)
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
    log = _python(joined.core, "reach-outside", script)
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
    log = _python(joined.core, "reach-kafka", script)
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
    log = _python(joined.core, "reach-rabbitmq", script)
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
