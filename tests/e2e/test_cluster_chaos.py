"""Cluster chaos: pods deleted, a group scaled to zero and back, RabbitMQ killed, a Kafka
broker deleted (cloud stack). Each time the API keeps accepting under load, every group's
lag drains, and the effects are counted as the local chaos suite counts them: every
accepted event is in Kafka, and each has exactly one profile count, badge completion,
delivered notification, and processed mark in every group that reads it. Run with
`make chaos` against the cluster in KUBECONFIG."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster
from tide.waiting import wait_until
from tide_dev.chaos.probes import Ledger, Tally, wait_drained
from tide_dev.chaos.workload import ApiLoad, LoadResult

pytestmark = pytest.mark.timeout(900)
RATE = 20.0
P99_BOUND_MS = 1000.0  # through kind's NodePort on a CI runner
# The load's host counts these, so a slow p99 can be told apart: a connection whose SYN
# went unanswered costs 1 s, then 2 s more (Linux's initial retransmission timeouts).
TCP_COUNTERS = ("TCPSynRetrans", "ListenOverflows", "TCPTimeouts")


def tcp_counters() -> Counter[str]:
    """This host's TCP extension counters named in TCP_COUNTERS (none off Linux)."""
    path = Path("/proc/net/netstat")
    if not path.exists():
        return Counter()
    lines = path.read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return Counter({name: int(row.get(name, 0)) for name in TCP_COUNTERS})
    return Counter()


@dataclass(frozen=True)
class Load:
    """Whose events the load posted, what the API answered, when the fault began (monotonic
    clock, as the result's answers), and what the host's TCP counted meanwhile."""

    users: list[str]
    result: LoadResult
    fault_at: float = 0.0
    tcp: Counter[str] = field(default_factory=Counter)

    def slowest(self, n: int = 5) -> str:
        """The n slowest answers, each with when it was sent relative to the fault."""
        worst = sorted(self.result.latencies, key=lambda answer: -answer[1])[:n]
        return ", ".join(
            f"{ms:.0f} ms sent {answered - ms / 1000 - self.fault_at:+.1f} s from the fault"
            for answered, ms in worst
        )


def under_load(
    cluster: Cluster, videos: list[str], fault: Callable[[], None], seconds: float = 20
) -> Load:
    users = [f"e2e-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
    before = tcp_counters()
    load = ApiLoad(cluster.api_url, users, videos, rate=RATE, headers=cluster.api_headers).start()
    try:
        wait_until(lambda: load.accepted() >= RATE * 3, timeout=60, what="steady load accepted")
        fault_at = time.monotonic()
        fault()
        target = load.accepted() + int(RATE * seconds)
        wait_until(lambda: load.accepted() >= target, timeout=seconds * 6, what="load after fault")
    finally:
        result = load.stop()
    tcp = tcp_counters()
    tcp.subtract(before)
    print(
        f"\ne2e: accepted {result.accepted_total}, refused {dict(result.refused)},"
        f" errors {dict(result.errors)}, p99 {result.p99_ms():.0f} ms;"
        f" this host's TCP meanwhile: {dict(tcp)}"
    )
    return Load(users, result, fault_at, tcp)


def steady(
    ledger: Ledger,
    load: Load,
    *,
    refusals_allowed: bool = False,
    p99_bound_ms: float = P99_BOUND_MS,
) -> None:
    """The API took the load, every group drained, and nothing was lost or doubled."""
    result = load.result
    if not refusals_allowed:
        assert result.refusals() == 0, "the API refused events while the fault was on"
        assert result.p99_ms() < p99_bound_ms, (
            f"p99 {result.p99_ms():.0f} ms, over {p99_bound_ms:.0f} ms; slowest: {load.slowest()};"
            f" this host's TCP during the load: {dict(load.tcp)}"
        )
    seconds = wait_drained(ledger.client, ledger.groups, timeout=ledger.drain_timeout_s)
    print(f"e2e: every group drained {seconds:.0f} s after the load")
    tally = ledger.tally(load.users, result)
    print("e2e: " + ", ".join(f"{k} {v}" for k, v in tally.figures.items()))
    assert not tally.violations, _explained(tally)


def _explained(tally: Tally) -> str:
    """Which claims of the no-loss check broke, with the ids and users behind them."""
    lines = [
        "the no-loss check failed:",
        *(f"  - {claim}" for claim in tally.violations),
        "  " + ", ".join(f"{k} {v}" for k, v in tally.figures.items()),
    ]
    missing = sorted(tally.accepted - tally.in_kafka)
    if missing:
        lines.append(f"  accepted (202) but not in Kafka: {len(missing)}, e.g. {missing[:5]}")
    expected = tally.expected
    lines.extend(
        f"  {user}: {expected[user]} events in Kafka; {seen.watched} profile counts,"
        f" {seen.completions} badge completions, {seen.notifications} notifications"
        for user, seen in tally.effects.items()
        if {seen.watched, seen.completions, seen.notifications} != {expected[user]}
    )
    return "\n".join(lines)


def test_deleting_a_groups_pods_leaves_the_rest_unaffected(
    cluster: Cluster, ledger: Ledger, videos: list[str]
) -> None:
    selector = "app.kubernetes.io/name=personalization"

    def delete_pods() -> None:
        for pod in cluster.pods(cluster.apps_namespace, selector):
            cluster.delete_pod(cluster.apps_namespace, pod)

    load = under_load(cluster, videos, delete_pods)
    wait_until(
        lambda: cluster.ready_pods(cluster.apps_namespace, selector) >= 1,
        timeout=300,
        what="personalization pods back",
    )
    steady(ledger, load)


def test_scaling_a_group_to_zero_and_back_loses_nothing(
    cluster: Cluster, ledger: Ledger, videos: list[str]
) -> None:
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

    load = under_load(cluster, videos, lambda: tide_scale("0"))
    wait_until(
        lambda: (
            cluster.ready_pods(cluster.apps_namespace, "app.kubernetes.io/name=recommendation") == 0
        ),
        timeout=300,
        what="recommendation at zero",
    )
    tide_scale("auto")  # KEDA takes over again and scales on the lag that built up
    steady(ledger, load)


def test_killing_the_rabbitmq_pod_delays_jobs_only(
    cluster: Cluster, ledger: Ledger, videos: list[str]
) -> None:
    selector = "app.kubernetes.io/name=tide-rabbitmq"

    def kill() -> None:
        for pod in cluster.pods(cluster.data_namespace, selector):
            cluster.delete_pod(cluster.data_namespace, pod, grace_period_seconds=0)

    load = under_load(cluster, videos, kill)
    wait_until(
        lambda: cluster.ready_pods(cluster.data_namespace, selector) >= 1,
        timeout=600,
        what="RabbitMQ back",
    )
    steady(ledger, load)


def test_deleting_a_kafka_broker_pod_on_the_cloud_stack(
    cluster: Cluster, ledger: Ledger, videos: list[str]
) -> None:
    if cluster.stack != "cloud":
        pytest.skip("the kind stack has one broker: deleting it is an outage, not a failover")
    selector = "strimzi.io/cluster=tide,strimzi.io/broker-role=true"

    def delete_one() -> None:
        pod = cluster.pods(cluster.data_namespace, selector)[0]
        cluster.delete_pod(cluster.data_namespace, pod)

    load = under_load(cluster, videos, delete_one)
    steady(ledger, load)
