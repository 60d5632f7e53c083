"""Cluster chaos: pods deleted, a group scaled to zero and back, RabbitMQ killed, a Kafka
broker deleted (cloud stack). Each time the API keeps accepting under load and every
group's lag drains afterwards. Run with `make chaos` against the cluster in KUBECONFIG."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Cluster
from tide.catalog import CATALOG
from tide.chaos.probes import wait_drained
from tide.chaos.workload import ApiLoad, LoadResult
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(900)
RATE = 20.0
P99_BOUND_MS = 1000.0  # through kind's NodePort on a CI runner


def _under_load(cluster: Cluster, fault: Callable[[], None], seconds: float = 20) -> LoadResult:
    users = [f"e2e-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
    load = ApiLoad(cluster.api_url, users, ["e2e-v1", "e2e-v2"], rate=RATE).start()
    try:
        wait_until(lambda: load.accepted() >= RATE * 3, timeout=60, what="steady load accepted")
        fault()
        target = load.accepted() + int(RATE * seconds)
        wait_until(lambda: load.accepted() >= target, timeout=seconds * 6, what="load after fault")
    finally:
        result = load.stop()
    print(
        f"\ne2e: accepted {result.accepted_total}, refused {dict(result.refused)},"
        f" errors {dict(result.errors)}, p99 {result.p99_ms():.0f} ms"
    )
    return result


def _steady(cluster: Cluster, result: LoadResult, *, refusals_allowed: bool = False) -> None:
    if not refusals_allowed:
        assert result.refusals() == 0, "the API refused events while the fault was on"
        assert result.p99_ms() < P99_BOUND_MS
    seconds = wait_drained(cluster.kafka, CATALOG.consumer_groups, timeout=600)
    print(f"e2e: every group drained {seconds:.0f} s after the load")


def test_deleting_a_groups_pods_leaves_the_rest_unaffected(cluster: Cluster) -> None:
    selector = "app.kubernetes.io/name=personalization"

    def delete_pods() -> None:
        for pod in cluster.pods(cluster.apps_namespace, selector):
            cluster.core.delete_namespaced_pod(pod.metadata.name, cluster.apps_namespace)

    result = _under_load(cluster, delete_pods)
    wait_until(
        lambda: cluster.ready_pods(cluster.apps_namespace, selector) >= 1,
        timeout=300,
        what="personalization pods back",
    )
    _steady(cluster, result)


def test_scaling_a_group_to_zero_and_back_loses_nothing(cluster: Cluster) -> None:
    def tide_scale(replicas: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tide",
                "scale",
                "recommendation",
                replicas,
                "--namespace",
                cluster.apps_namespace,
            ],
            check=True,
        )

    result = _under_load(cluster, lambda: tide_scale("0"))
    wait_until(
        lambda: (
            cluster.ready_pods(cluster.apps_namespace, "app.kubernetes.io/name=recommendation") == 0
        ),
        timeout=300,
        what="recommendation at zero",
    )
    tide_scale("auto")  # KEDA takes over again and scales on the lag that built up
    _steady(cluster, result)


def test_killing_the_rabbitmq_pod_delays_jobs_only(cluster: Cluster) -> None:
    selector = "app.kubernetes.io/name=tide-rabbitmq"

    def kill() -> None:
        for pod in cluster.pods(cluster.data_namespace, selector):
            cluster.core.delete_namespaced_pod(
                pod.metadata.name, cluster.data_namespace, grace_period_seconds=0
            )

    result = _under_load(cluster, kill)
    wait_until(
        lambda: cluster.ready_pods(cluster.data_namespace, selector) >= 1,
        timeout=600,
        what="RabbitMQ back",
    )
    _steady(cluster, result)


def test_deleting_a_kafka_broker_pod_on_the_cloud_stack(cluster: Cluster) -> None:
    if cluster.stack != "cloud":
        pytest.skip("the kind stack has one broker: deleting it is an outage, not a failover")
    selector = "strimzi.io/cluster=tide,strimzi.io/broker-role=true"

    def delete_one() -> None:
        pod = cluster.pods(cluster.data_namespace, selector)[0]
        cluster.core.delete_namespaced_pod(pod.metadata.name, cluster.data_namespace)

    result = _under_load(cluster, delete_one)
    _steady(cluster, result)
