"""KEDA scales each consumer group of the deployed kind stack on its real lag, and holds a
count set by hand.

`make up`'s own `pulumi up` deploys the kind stack. Its brokers are the harness's Kafka
(SCRAM listener, each KafkaUser's password from its Secret), RabbitMQ (Tide's definitions)
and PostgreSQL. KEDA's operator and metrics API server, built from KEDA's module, run as
KEDA's ServiceAccount; the HPA controller of kube-controller-manager reads their external
metrics through the aggregation layer and scales the Deployments, whose pods KWOK runs.
The only change to Tide's objects: the in-cluster addresses KEDA dials (the Kafka
bootstrap in each ScaledObject, the RabbitMQ host in the worker's credentials Secret) are
pointed at the harness brokers on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from infra.components.rabbitmq import rabbitmq_credentials_secret
from infra.local_stack import ROOT

from ott.catalog import CATALOG
from tests.deploy.apiserver import ApiServer
from tests.deploy.operators import StackBrokers
from tests.engine.conftest import OPERATED, OPERATED_DATA, Deployed
from tests.harness.cluster import Cluster
from tests.harness.keda import Keda
from tests.reports import ENGINE, report
from tide.scaling import PAUSED_REPLICAS
from tide.waiting import wait_until
from tide_dev.brokers import broker_dir

pytestmark = pytest.mark.timeout(1800)
APPS = f"{OPERATED}-apps"
DATA = OPERATED_DATA
KEDA = "keda.sh/v1alpha1"
# Scale-up: KEDA polls every 10 s (the chart's pollingInterval), the HPA controller syncs
# every 15 s and at most doubles (or adds 4 pods) per 15 s. Under load, well within this.
SCALE_UP_WITHIN_S = 240
# Scale-down: the HPA's stabilization window (the harness cluster's 60 s, not the 300 s
# default) or KEDA's 120 s cooldown to zero, after the next poll sees no lag.
SCALE_DOWN_WITHIN_S = 360
# A count set by hand must survive this many KEDA polls and HPA syncs.
HOLD_S = 40


@dataclass
class Timeline:
    """One autoscaled service's Deployment replicas over time, from the backlog on."""

    service: str
    baseline: int
    maximum: int
    first_up: float | None = None
    at_max: float | None = None
    peak: int = 0
    back: float | None = None

    def observe(self, replicas: int, at: float) -> None:
        self.peak = max(self.peak, replicas)
        if self.first_up is None and replicas > self.baseline:
            self.first_up = at
        if self.at_max is None and replicas == self.maximum:
            self.at_max = at


def _replicas(api: ApiServer) -> dict[str, int]:
    resource = api.client.resources.get(api_version="apps/v1", kind="Deployment")
    return {d.metadata.name: d.spec.replicas for d in resource.get(namespace=APPS).items}


def _scaled_objects(api: ApiServer) -> dict[str, dict[str, Any]]:
    resource = api.client.resources.get(api_version=KEDA, kind="ScaledObject")
    return {s.metadata.name: s.to_dict() for s in resource.get(namespace=APPS).items}


def _condition(scaled: dict[str, Any], kind_: str) -> bool:
    conditions = (scaled.get("status") or {}).get("conditions") or []
    return any(c["type"] == kind_ and c["status"] == "True" for c in conditions)


def _point_keda_at_loopback(api: ApiServer, brokers: StackBrokers) -> list[dict[str, Any]]:
    """Rewrite the in-cluster broker addresses KEDA dials to the harness's, nothing else;
    the patches that put the rendered addresses back, for the tests that read them after."""
    loopback = brokers.loopback()
    originals: list[dict[str, Any]] = []
    for name, scaled in _scaled_objects(api).items():
        triggers = scaled["spec"]["triggers"]
        originals.append({"apiVersion": KEDA, "kind": "ScaledObject",
                          "metadata": {"name": name, "namespace": APPS},
                          "spec": {"triggers": copy.deepcopy(triggers)}})  # fmt: skip
        for trigger in triggers:
            address = trigger["metadata"].get("bootstrapServers")
            if address is not None:
                trigger["metadata"]["bootstrapServers"] = loopback[address]
        metadata = {"name": name, "namespace": APPS}
        patch = {"apiVersion": KEDA, "kind": "ScaledObject", "metadata": metadata,
                 "spec": {"triggers": triggers}}  # fmt: skip
        assert api.apply(patch) is None
    for worker in CATALOG.queue_workers:
        secret = rabbitmq_credentials_secret(worker.service)
        url = brokers.secret(APPS, secret)["url"]
        (address,) = [a for a in loopback if a in url]
        local = base64.b64encode(url.replace(address, loopback[address]).encode()).decode()
        metadata = {"name": secret, "namespace": APPS}
        patch = {"apiVersion": "v1", "kind": "Secret", "data": {"url": local}, "metadata": metadata}
        originals.append({**patch, "data": {"url": base64.b64encode(url.encode()).decode()}})
        assert api.apply(patch) is None
    return originals


def _trigger_credentials(api: ApiServer, brokers: StackBrokers, service: str) -> dict[str, str]:
    """The parameters `service`'s TriggerAuthentication gives KEDA, read from their Secrets."""
    resource = api.client.resources.get(api_version=KEDA, kind="TriggerAuthentication")
    refs = resource.get(name=service, namespace=APPS).to_dict()["spec"]["secretTargetRef"]
    return {r["parameter"]: brokers.secret(APPS, r["name"])[r["key"]] for r in refs}


def _backlog(api: ApiServer, brokers: StackBrokers) -> dict[str, int]:
    """Messages per topic: enough that every group reading it wants twice its partitions.

    Written through the SCRAM listener KEDA reads from, as the user that a group's
    TriggerAuthentication names: the credentials KEDA is given work on that listener.
    """
    per_topic: dict[str, tuple[int, str]] = {}
    for group in CATALOG.consumer_groups:
        for topic in group.topics:
            wanted = 2 * CATALOG.topic(topic).partitions * group.autoscaling.lag_threshold
            if wanted > per_topic.get(topic, (0, ""))[0]:
                per_topic[topic] = (wanted, group.service)
    failed: list[str] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failed.append(str(error))

    for topic, (count, service) in per_topic.items():
        credentials = _trigger_credentials(api, brokers, service)
        assert credentials["sasl"] == "scram_sha512", credentials["sasl"]
        producer = Producer({
            "bootstrap.servers": brokers.kafka.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": credentials["username"],
            "sasl.password": credentials["password"],
            "linger.ms": 20,
        })  # fmt: skip
        partitions = CATALOG.topic(topic).partitions
        for index in range(count):
            # Spread evenly: KEDA counts the lag of each partition. Keyed, because a
            # compacted topic (content-events) refuses a record without a key.
            producer.produce(topic, b"{}", key=str(index).encode(), partition=index % partitions,
                             on_delivery=delivered)  # fmt: skip
            if index % 10_000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0, f"the backlog on {topic} was not all written"
        assert not failed, f"{len(failed)} records refused on {topic}: {failed[0]}"
    return {topic: count for topic, (count, _) in per_topic.items()}


async def _queue(url: str, queue: str, *, publish: int = 0, purge: bool = False) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if publish:
            for _ in range(publish):
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)
        if purge:
            declared = await channel.declare_queue(queue, passive=True)
            await declared.purge()


def _consume_backlog(brokers: StackBrokers) -> None:
    """Each group's committed offsets moved to the end: its lag is gone, as once consumed."""
    admin = AdminClient({"bootstrap.servers": brokers.kafka.bootstrap})
    partitions = [
        TopicPartition(topic, p)
        for topic in {t for g in CATALOG.consumer_groups for t in g.topics}
        for p in range(CATALOG.topic(topic).partitions)
    ]
    latest_spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    ends = admin.list_offsets(dict.fromkeys(partitions, latest_spec))
    latest = {tp: future.result(timeout=30).offset for tp, future in ends.items()}
    for group in CATALOG.consumer_groups:
        offsets = [TopicPartition(tp.topic, tp.partition, latest[tp]) for tp in latest
                   if tp.topic in group.topics]  # fmt: skip
        request = [ConsumerGroupTopicPartitions(group.name, offsets)]
        for future in admin.alter_consumer_group_offsets(request).values():
            future.result(timeout=30)
    for worker in CATALOG.queue_workers:
        asyncio.run(_queue(brokers.rabbitmq.url, worker.queue, purge=True))


def _watch(
    api: ApiServer, timelines: list[Timeline], started: float, *, until: str, timeout: float
) -> None:
    """Sample every service's replicas until each reaches `until` (max or baseline)."""

    def reached() -> bool:
        replicas = _replicas(api)
        at = time.monotonic() - started
        done = True
        for timeline in timelines:
            count = replicas[timeline.service]
            timeline.observe(count, at)
            if until == "max":
                done &= count == timeline.maximum
            else:
                if count == timeline.baseline and timeline.back is None:
                    timeline.back = at
                done &= count == timeline.baseline
        return done

    try:
        wait_until(reached, timeout=timeout, what=f"every group at its {until}", interval=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {_replicas(api)}; {timelines}") from exc


def _run(argv: list[str], *, kubeconfig: Path) -> None:
    """A command as the user types it, with kubectl's context on the harness cluster."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


def _tide(*args: str, kubeconfig: Path) -> None:
    _run([str(ROOT / ".venv" / "bin" / "tide"), *args, "--namespace", APPS], kubeconfig=kubeconfig)


def _kubectl(*args: str, kubeconfig: Path) -> None:
    _run([str(ROOT / "bin" / "kubectl"), "--namespace", APPS, *args], kubeconfig=kubeconfig)


def _holds(api: ApiServer, service: str, count: int) -> None:
    """KEDA has let go of `service` (Paused), and its replicas stay at `count` meanwhile."""
    wait_until(
        lambda: _condition(_scaled_objects(api)[service], "Paused"),
        timeout=60,
        what=f"KEDA reporting {service} paused",
        interval=1,
    )
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline:
        assert _replicas(api)[service] == count, f"{service} left the count set by hand"
        time.sleep(1)  # sampling a hold over several KEDA polls: nothing to wait on


@pytest.fixture(scope="module")
def keda_on_lag(
    cluster: Cluster, cluster_api: ApiServer, engine_dir: Path, operated_stack: Deployed
) -> Iterator[tuple[StackBrokers, Keda]]:
    """The stack's brokers provisioned from its objects, and KEDA reconciling it."""
    brokers = StackBrokers(broker_dir(), cluster_api, data=DATA, apps=APPS)
    brokers.start()
    keda = Keda(engine_dir / "keda", kubeconfig=cluster.kubeconfig)
    originals: list[dict[str, Any]] = []
    try:
        originals = _point_keda_at_loopback(cluster_api, brokers)
        rejected = cluster_api.apply_all(keda.manifests())
        assert not rejected, "KEDA's manifests refused:\n" + "\n".join(map(str, rejected))
        keda.start()
        yield brokers, keda
    finally:
        keda.stop()
        brokers.stop()
        for original in originals:  # the stack as rendered, for the tests that read it later
            assert cluster_api.apply(original) is None


def test_each_group_scales_on_its_lag_holds_a_count_by_hand_and_scales_back(
    cluster_api: ApiServer, operated_stack: Deployed, keda_on_lag: tuple[StackBrokers, Keda]
) -> None:
    brokers, keda = keda_on_lag
    kubeconfig = operated_stack.kubeconfig
    scaled = _scaled_objects(cluster_api)
    autoscaled = {g.service for g in CATALOG.consumer_groups} | {
        w.service for w in CATALOG.queue_workers
    }
    assert set(scaled) == autoscaled

    def timelines_from_now() -> list[Timeline]:
        return [
            Timeline(name, baseline=spec["minReplicaCount"], maximum=spec["maxReplicaCount"])
            for name, spec in ((n, o["spec"]) for n, o in sorted(scaled.items()))
        ]

    for group in CATALOG.consumer_groups:
        maximum = scaled[group.service]["spec"]["maxReplicaCount"]
        assert maximum <= min(CATALOG.topic(t).partitions for t in group.topics), group.name

    # Idle: every ScaledObject Ready, every Deployment at its floor (0 where allowed).
    def ready() -> bool:
        return all(_condition(s, "Ready") for s in _scaled_objects(cluster_api).values())

    try:
        wait_until(ready, timeout=120, what="every ScaledObject Ready", interval=1)
    except TimeoutError as exc:
        conditions = {n: (s.get("status") or {}).get("conditions")
                      for n, s in _scaled_objects(cluster_api).items()}  # fmt: skip
        raise AssertionError(f"{exc}: {conditions}\n{keda.log_tail()}") from exc
    _watch(cluster_api, timelines_from_now(), time.monotonic(), until="baseline",
           timeout=SCALE_UP_WITHIN_S)  # fmt: skip

    # A backlog on every topic and queue: each group climbs to its ceiling, never past it.
    timelines = timelines_from_now()
    started = time.monotonic()
    written = _backlog(cluster_api, brokers)
    for worker in CATALOG.queue_workers:
        count = 2 * worker.autoscaling.max_replicas * worker.autoscaling.lag_threshold
        asyncio.run(_queue(brokers.rabbitmq.url, worker.queue, publish=count))
    _watch(cluster_api, timelines, started, until="max", timeout=SCALE_UP_WITHIN_S)

    # By hand, while KEDA still sees the backlog: `tide scale` and the kubectl path hold.
    _tide("scale", "personalization", "2", kubeconfig=kubeconfig)
    _kubectl("annotate", "scaledobject/analytics", f"{PAUSED_REPLICAS}=3", "--overwrite",
             kubeconfig=kubeconfig)  # fmt: skip
    _kubectl("scale", "deployment/analytics", "--replicas=3", kubeconfig=kubeconfig)
    _holds(cluster_api, "personalization", 2)
    _holds(cluster_api, "analytics", 3)
    # ...and handing back gives KEDA the count again: the backlog takes both to the ceiling.
    _tide("scale", "personalization", "auto", kubeconfig=kubeconfig)
    _kubectl("annotate", "scaledobject/analytics", f"{PAUSED_REPLICAS}-", kubeconfig=kubeconfig)
    resumed = [t for t in timelines if t.service in {"personalization", "analytics"}]
    _watch(cluster_api, resumed, started, until="max", timeout=SCALE_UP_WITHIN_S)

    # The backlog consumed: each group back to its floor, zero where the catalog allows.
    drained = time.monotonic()
    _consume_backlog(brokers)
    _watch(cluster_api, timelines, drained, until="baseline", timeout=SCALE_DOWN_WITHIN_S)
    for timeline in timelines:
        assert timeline.peak == timeline.maximum, timeline

    report(
        ENGINE,
        f"autoscaling on real lag (backlog {written} messages per topic):\n  "
        + "\n  ".join(
            f"{t.service}: {t.baseline} -> {t.maximum}; first scale-up {t.first_up:.0f} s, "
            f"at max {t.at_max:.0f} s after the backlog; back to {t.baseline} "
            f"{t.back:.0f} s after it was consumed"
            for t in timelines
            if t.first_up is not None and t.at_max is not None and t.back is not None
        ),
    )
