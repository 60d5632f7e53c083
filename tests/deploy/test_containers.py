"""Tide's image, run from each rendered Deployment and Job spec, comes up on the stack's brokers.

Per workload: the container runs with exactly its rendered command, args, env
(secrets from the API server, in-cluster hosts pointed at loopback), user,
read-only root filesystem, dropped capabilities, volumes and memory limit. A
Deployment must pass its readiness and liveness probes and exit 0 on SIGTERM
within its grace period; a Job must exit 0.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from infra.components.rabbitmq import CLUSTER_NAME as RABBITMQ_CLUSTER
from packaging.utils import canonicalize_name

from tests.deploy.apiserver import ApiServer, Rejection
from tests.deploy.containers import (
    READY_WITHIN_S,
    REGISTRY_VARIABLE,
    Workload,
    environment,
    run_arguments,
    run_job,
    start,
    workloads,
)
from tests.deploy.operators import StackBrokers
from tests.deploy.rollout import prefix_of
from tests.deploy.stack import Rendered
from tests.harness.docker import docker
from tests.lockfile import for_image
from tide_dev.brokers import broker_dir
from tide_dev.process import ensure_free


@pytest.fixture(scope="session")
def stack_brokers(api: ApiServer, deployed: dict[str, list[Rejection]]) -> Iterator[StackBrokers]:
    assert not deployed["kind"], "the kind stack was not accepted; see test_apply"
    prefix = prefix_of("kind")
    brokers = StackBrokers(
        broker_dir(),
        api,
        data=f"{prefix}-data",
        apps=f"{prefix}-apps",
    )
    try:
        brokers.start()
        yield brokers
    finally:
        brokers.stop()


def _metrics_only_on_their_port(workload: Workload) -> None:
    """/metrics answers on the pod's metrics port, which only a ClusterIP Service exposes,
    and no longer on its HTTP port (an API's public one)."""
    ports = {p["name"]: p["containerPort"] for p in workload.container["ports"]}
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as got:
        assert b"tide_" in got.read(), f"{workload}: the metrics port serves no Tide metric"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/metrics", timeout=10)
    refused.value.close()  # the error holds the answer's socket
    assert refused.value.code == 404, f"{workload}: /metrics still on the HTTP port"


def _run_service(workload: Workload, flags: list[str], image: str, name: str) -> str:
    # Host networking, as the probes knock on loopback: the pod's port must be free here.
    for port in workload.container.get("ports", []):
        ensure_free(port["containerPort"], str(workload))
    container = start(workload, image, flags, name)
    began = time.monotonic()
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            url = workload.probe_url(probe)
            assert url is not None, f"{workload} has no HTTP {probe}"
            try:
                container.wait_ready(url, READY_WITHIN_S)
            except (TimeoutError, RuntimeError) as exc:
                pytest.fail(f"{workload}: {probe} {exc}\n{container.logs()}")
        ready = time.monotonic() - began
        _metrics_only_on_their_port(workload)
        grace = int(workload.pod["spec"].get("terminationGracePeriodSeconds", 30))
        code = container.stop(grace)
        assert code == 0, f"{workload} exited {code} on SIGTERM\n{container.logs()}"
        return f"ready in {ready:.1f}s, exit 0 on SIGTERM"
    finally:
        container.remove()


def test_every_tide_container_runs_from_its_rendered_spec(
    rendered: dict[str, Rendered], stack_brokers: StackBrokers, tide_image: str
) -> None:
    found = workloads(rendered["kind"].objects, "tide:")
    jobs = [w for w in found if w.kind == "Job"]
    services = [w for w in found if w.kind == "Deployment"]
    assert jobs
    assert len(services) >= 8
    scratch = Path(tempfile.mkdtemp(prefix="tide-secret-files-"))
    results: dict[str, str] = {}
    # Jobs first: the migration is what every service's database work needs.
    for workload in sorted(jobs, key=lambda w: REGISTRY_VARIABLE in str(w.container)):
        env = environment(workload, stack_brokers.secret, stack_brokers.loopback(), drop=set())
        flags = run_arguments(
            workload, env, stack_brokers.secret, scratch, stack_brokers.config_map
        )
        code, logs = run_job(workload, flags, workload.container["image"], workload.name)
        if REGISTRY_VARIABLE in env:
            assert code != 0, logs
            assert env[REGISTRY_VARIABLE] in logs, logs
            results[str(workload)] = f"exit {code}, names the registry it cannot reach"
        else:
            assert code == 0, f"{workload} exited {code}\n{logs}"
            results[str(workload)] = "exit 0"
    for workload in services:
        env = environment(
            workload, stack_brokers.secret, stack_brokers.loopback(), drop={REGISTRY_VARIABLE}
        )
        flags = run_arguments(
            workload, env, stack_brokers.secret, scratch, stack_brokers.config_map
        )
        results[str(workload)] = _run_service(
            workload, flags, workload.container["image"], workload.name
        )
    print("\ncontainer smoke (kind stack):")
    for what, outcome in results.items():
        print(f"  {what}: {outcome}")


def test_the_image_holds_the_locked_runtime_and_no_local_tools(tide_image: str) -> None:
    # pip inside the image says what it installed; the lock says what it should have.
    listed = docker("run", "--rm", tide_image, "python", "-m", "pip", "list", "--format=json")
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed.stdout)}
    locked = for_image()
    assert {name: installed.get(name) for name in locked} == locked
    extra = set(installed) - set(locked) - {"tide", "pip", "setuptools", "wheel"}
    assert not extra, f"the image has packages the lock does not name: {extra}"
    # The local tools are tide-dev's, which the image never installs.
    probe = docker("run", "--rm", tide_image, "python", "-c", "import tide_dev", check=False)
    assert probe.returncode != 0
    assert "No module named 'tide_dev'" in probe.stderr
    for tool in ("chaos", "kafka-exporter"):
        refused = docker("run", "--rm", tide_image, "tide", tool, check=False)
        assert refused.returncode == 2, refused
        assert "No such command" in refused.stderr, refused


async def test_the_rabbitmq_operators_default_user_logs_in(stack_brokers: StackBrokers) -> None:
    # The Secret the operator is given for its default user (secretBackend.externalSecret),
    # against the broker that loaded the stack's definitions as the cluster's nodes do.
    (cluster,) = [
        c
        for c in stack_brokers.objects(
            "rabbitmq.com/v1beta1", "RabbitmqCluster", stack_brokers.data
        )
        if c["metadata"]["name"] == RABBITMQ_CLUSTER
    ]
    name = cluster["spec"]["secretBackend"]["externalSecret"]["name"]
    admin = stack_brokers.secret(stack_brokers.data, name)
    conf = dict(
        line.split(" = ", 1) for line in admin["default_user.conf"].splitlines() if line.strip()
    )
    assert (conf["default_user"], conf["default_pass"]) == (admin["username"], admin["password"])
    url = f"amqp://{admin['username']}:{admin['password']}@127.0.0.1:{stack_brokers.rabbitmq.port}/"
    connection = await aio_pika.connect(url, timeout=30)
    try:
        channel = await connection.channel()
        # An administrator may declare (the services' users may not).
        queue = await channel.declare_queue(exclusive=True)
        assert queue.name
    finally:
        await connection.close()
