"""A credential-seed rotation, done as the README says, loses no accepted event.

Two renderings of the kind stack differ only in `tide:credentialSeed`. The stack's brokers
start with the first one's passwords, and every Deployment of Tide's image runs from its
rendered spec, as in test_containers. Under a steady load on the API, the rotation
happens step by step as it does on a cluster:
- `pulumi up` replaces the Secrets (and nothing else);
- the operators act on them (tests/deploy/operators.py: SCRAM users, the database
  owner's password, RabbitMQ restarted with the new definitions);
- every service restarts with the new Secrets (`kubectl rollout restart`).

Then every event the API accepted, before, during and after, has each of its effects
exactly once (the chaos suite's ledger), and the old passwords no longer log in.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from infra.components.kafka_users import kafka_credentials_secret
from infra.components.postgres import postgres_credentials_secret
from psycopg.conninfo import make_conninfo

from ott.catalog import CATALOG
from tests.deploy.apiserver import ApiServer
from tests.deploy.containers import (
    READY_WITHIN_S,
    REGISTRY_VARIABLE,
    Container,
    Workload,
    environment,
    run_arguments,
    run_job,
    start,
    workloads,
)
from tests.deploy.operators import StackBrokers
from tests.deploy.rollout import FIRST_TAG, deploy
from tests.deploy.stack import Rendered, config_for, identity, render_stack
from tide.auth import API_KEY_HEADER, new_api_key
from tide.waiting import wait_until
from tide_dev.brokers import broker_dir
from tide_dev.chaos.experiments import catalogue
from tide_dev.chaos.probes import Ledger
from tide_dev.chaos.workload import ApiLoad
from tide_dev.ports import free_port
from tide_dev.process import ensure_free

pytestmark = pytest.mark.timeout(1200)

PREFIX = "kind-rotation"
SEEDS = ("before-rotation-" + "1" * 32, "after-rotation-" + "2" * 32)
RATE = 10.0  # API requests per second, all through the rotation


# NodePorts are cluster-wide: the kind stack of test_apply holds the tracked ones.
EXPOSURE = {"serviceType": "NodePort", "apiNodePort": 31080, "grafanaNodePort": 31030,
            "prometheusNodePort": 31090}  # fmt: skip


# The load's key is made outside the stack (given by its hash), so it outlives the
# rotation; the keys derived from the seed rotate with it.
LOAD_KEY, LOAD_ENTRY = new_api_key("rotation-load", ["events:write"])
AUTH = {"mode": "api-keys", "clients": [LOAD_ENTRY.model_dump()]}


def _render(seed: str) -> Rendered:
    config = config_for(
        "kind",
        prefix=PREFIX,
        image_tag=FIRST_TAG,
        credentialSeed=seed,
        exposure=EXPOSURE,
        auth=AUTH,
    )
    return render_stack("kind", config, PREFIX)


class Services:
    """Every Deployment of Tide's image as a container, on host networking. The API keeps
    its rendered port; each other service gets a free one (they all render 8080)."""

    def __init__(self, brokers: StackBrokers, found: list[Workload], image: str) -> None:
        self.brokers = brokers
        self.found = found
        self.image = image
        self.ports: dict[str, int] = {}
        self.running: dict[str, Container] = {}
        self.restarts = 0
        self.scratch = Path(tempfile.mkdtemp(prefix="tide-rotation-files-"))

    def api_port(self) -> int:
        (api,) = [w for w in self.found if w.name.endswith("video-service")]
        return int(api.container["ports"][0]["containerPort"])

    def _port(self, workload: Workload) -> int:
        if workload.name not in self.ports:
            is_api = workload.name.endswith("video-service")
            self.ports[workload.name] = self.api_port() if is_api else free_port()
        return self.ports[workload.name]

    def start(self, workload: Workload) -> None:
        """A pod of `workload` with the Secrets as the API server holds them now."""
        port = self._port(workload)
        ensure_free(port, str(workload))
        env = environment(
            workload, self.brokers.secret, self.brokers.loopback(), drop={REGISTRY_VARIABLE}
        )
        env["TIDE_HTTP_PORT"] = str(port)
        env["TIDE_METRICS_PORT"] = str(free_port())  # every pod renders the same one
        flags = run_arguments(
            workload, env, self.brokers.secret, self.scratch, self.brokers.config_map
        )
        name = f"rotation-{workload.name}-{self.restarts}"
        self.restarts += 1
        container = start(workload, self.image, flags, name)
        self.running[workload.name] = container
        path = workload.container["readinessProbe"]["httpGet"]["path"]
        try:
            container.wait_ready(f"http://127.0.0.1:{port}{path}", READY_WITHIN_S)
        except (TimeoutError, RuntimeError) as exc:
            pytest.fail(f"{workload}: not ready: {exc}\n{container.logs()}")

    def restart(self, workload: Workload) -> None:
        """`kubectl rollout restart`, one pod: SIGTERM within the grace period, then a new
        pod reading the Secrets afresh."""
        old = self.running.pop(workload.name)
        grace = int(workload.pod["spec"].get("terminationGracePeriodSeconds", 30))
        code = old.stop(grace)
        logs = old.logs()
        old.remove()
        assert code == 0, f"{workload} exited {code} on SIGTERM\n{logs}"
        self.start(workload)

    def remove(self) -> None:
        for container in self.running.values():
            container.remove()


def _differences(before: Rendered, after: Rendered) -> list[tuple[str, str, str, str]]:
    old = {identity(o): o for o in before.objects}
    new = {identity(o): o for o in after.objects}
    assert old.keys() == new.keys(), "a new seed must not add or remove objects"
    return sorted(key for key in old if old[key] != new[key])


def _migrate(job: Workload, brokers: StackBrokers, image: str) -> None:
    """Each Job but the schema registration (no registry here) must exit 0."""
    env = environment(job, brokers.secret, brokers.loopback(), drop=set())
    if REGISTRY_VARIABLE in env:
        return
    flags = run_arguments(job, env, brokers.secret, Path(tempfile.mkdtemp()), brokers.config_map)
    code, logs = run_job(job, flags, image, f"rotation-{job.name}")
    assert code == 0, f"{job}\n{logs}"


def _postgres_refuses(dsn: str) -> str:
    """Why PostgreSQL refused the login (the test fails if it did not)."""
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return str(exc)
    raise AssertionError("PostgreSQL still takes the old owner password")


def _kafka_refuses(bootstrap: str, credentials: dict[str, str]) -> None:
    errors: list[KafkaError] = []
    admin = AdminClient({
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": credentials["username"],
        "sasl.password": credentials["password"],
        "error_cb": errors.append,
    })  # fmt: skip
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=10)
    admin.poll(1)  # the client's errors reach error_cb only when it is polled
    codes = {e.code() for e in errors}
    assert KafkaError._AUTHENTICATION in codes, f"Kafka did not refuse the login: {errors}"


def test_a_seed_rotation_as_documented_loses_no_accepted_event(
    api: ApiServer, tide_image: str
) -> None:
    before, after = _render(SEEDS[0]), _render(SEEDS[1])
    changed = _differences(before, after)
    assert changed, "the seed changed nothing"
    assert {kind for _, kind, _, _ in changed} == {"Secret"}, changed
    assert not deploy(api, before), "the first rendering was refused; see test_apply"

    brokers = StackBrokers(broker_dir(), api, data=f"{PREFIX}-data", apps=f"{PREFIX}-apps")
    brokers.start()
    services: Services | None = None
    try:
        found = workloads(before.objects, "tide:")
        for job in [w for w in found if w.kind == "Job"]:
            _migrate(job, brokers, tide_image)
        services = Services(brokers, [w for w in found if w.kind == "Deployment"], tide_image)
        assert len(services.found) >= 8
        for workload in services.found:
            services.start(workload)
        ledger = Ledger(CATALOG, {"bootstrap.servers": brokers.kafka.bootstrap},
                        brokers.postgres.dsn)  # fmt: skip
        videos = catalogue(ledger)
        users = [f"rotation-{uuid.uuid4().hex[:6]}-{i}" for i in range(6)]
        load = ApiLoad(
            f"http://127.0.0.1:{services.api_port()}",
            users,
            videos,
            rate=RATE,
            headers={API_KEY_HEADER: LOAD_KEY},
        )
        load.start()

        def accepted_more(n: int) -> None:
            target = load.accepted() + n
            wait_until(lambda: load.accepted() >= target, timeout=n / RATE * 6 + 60,
                       what=f"{target} events accepted")  # fmt: skip

        accepted_more(100)
        old_owner = brokers.postgres.dsn
        old_role = brokers.secret(brokers.apps, postgres_credentials_secret("badges"))["dsn"]
        old_kafka = brokers.secret(brokers.apps, kafka_credentials_secret("video-service"))

        # `pulumi up` with the new seed: the Secrets, replaced under the same names.
        secrets = [o for o in after.objects if o["kind"] == "Secret"]
        assert not api.apply_all(secrets)
        brokers.rotate_credentials()
        accepted_more(50)  # the running pods keep their sessions
        for workload in services.found:  # `kubectl rollout restart deployment`
            services.restart(workload)
        accepted_more(100)
        result = load.stop()

        ledger = Ledger(ledger.catalog, ledger.client, brokers.postgres.dsn)  # the new owner
        tally = ledger.tally(users, result)
        print(f"\nseed rotation under load: {tally.figures}")
        assert not tally.violations, f"{tally.violations}\n{tally.figures}"
        assert len(tally.accepted) >= 250

        assert "password authentication failed" in _postgres_refuses(old_owner)
        # A service's role, as CloudNativePG reloads it from its labelled Secret.
        old_badges = make_conninfo(old_role, host="127.0.0.1", port=str(brokers.postgres.port))
        assert "password authentication failed" in _postgres_refuses(old_badges)
        _kafka_refuses(brokers.kafka.sasl_bootstrap, old_kafka)
    finally:
        if services is not None:
            services.remove()
        brokers.stop()
