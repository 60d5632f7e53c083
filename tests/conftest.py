"""Session fixtures: real brokers (from TIDE_* or started here) and per-test factories."""

from __future__ import annotations

import gc
import os
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ott.catalog import REFERENCE_CATALOG
from tests import reports
from tide_dev import Brokers, BrokerSession
from tide_dev.brokers import ENV_REGISTRY

# The runtime has no catalog of its own: the tests run the reference platform, as
# `make` does, unless the environment names another. Every process a test starts
# inherits it.
os.environ.setdefault("TIDE_CATALOG_FILE", str(REFERENCE_CATALOG))

# The runtime fixtures (database, private catalog topics, running groups) serve
# both the integration and the chaos suites.
pytest_plugins = ("tests.runtime_fixtures",)

_session: BrokerSession | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test under tests/<tier>/ carries that tier's marker, so `-m unit` and
    # friends select exactly a directory's tests without decorating each one.
    for item in items:
        parts = item.path.parts
        for tier in ("unit", "integration", "chaos", "deploy", "engine", "node", "e2e"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
    # No registry can be installed here (README, "Schema registry"): tests that need
    # one are deselected, and counted as such, unless the environment names one.
    if not os.environ.get(ENV_REGISTRY):
        deselected = [item for item in items if item.get_closest_marker("registry")]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not item.get_closest_marker("registry")]


@pytest.fixture(scope="session")
def brokers() -> Brokers:
    """Kafka, RabbitMQ and PostgreSQL (and a registry, if given), up for the whole session.

    They are stopped in `pytest_sessionfinish`, which alone knows whether a test
    failed and so whether their logs are worth keeping.
    """
    global _session  # noqa: PLW0603 - shared with the session-finish hook
    _session = BrokerSession()
    return _session.open()


@pytest.fixture(scope="session")
def broker_session(brokers: Brokers) -> BrokerSession:
    """The harness itself, for tests that must act on the brokers it started (restart, topology)."""
    assert _session is not None
    return _session


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for section, texts in reports.SECTIONS.items():
        terminalreporter.section(section)
        for text in texts:
            terminalreporter.write_line(text)
            terminalreporter.write_line("")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _session is None:
        return
    failed = session.testsfailed > 0 or exitstatus not in (0, 5)
    # Destroy leftover Kafka clients while their broker still runs; otherwise
    # librdkafka reports every failed reconnect after the session is over.
    gc.collect()
    _session.close(keep_logs=failed)
    if failed:
        terminal = session.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(f"broker logs kept in {_session.root}")


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """An address that takes connections and never answers: a Kafka that does not
    acknowledge, as opposed to one that is down. librdkafka then reports no broker down
    (its API version request waits), so a publisher queues what it is given and the
    messages time out; against a closed port it learns at once that Kafka is unreachable
    and refuses to send."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)  # the kernel completes the handshakes; nothing reads
        yield f"127.0.0.1:{server.getsockname()[1]}"


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def create_topic(brokers: Brokers) -> Iterator[Callable[..., str]]:
    """Factory: create a uniquely named topic, wait until it exists, delete it afterwards."""
    admin = AdminClient({"bootstrap.servers": brokers.kafka_bootstrap})
    created: list[str] = []

    def create(
        prefix: str = "test", *, partitions: int = 1, config: dict[str, str] | None = None
    ) -> str:
        name = unique(prefix)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, operation_timeout=30).values():
            future.result(timeout=30)


@pytest.fixture
def producer(brokers: Brokers) -> Iterator[Callable[..., Producer]]:
    """Factory: an idempotent, acks=all producer; flushed and checked at teardown."""
    made: list[Producer] = []

    def make(**overrides: object) -> Producer:
        config: dict[str, object] = {
            "bootstrap.servers": brokers.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            **overrides,
        }
        instance = Producer(config)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        assert instance.flush(30) == 0, "producer still had undelivered messages at teardown"


@pytest.fixture
def consumer(brokers: Brokers) -> Iterator[Callable[..., Consumer]]:
    """Factory: a consumer in the given group, reading from the earliest offset; closed after."""
    made: list[Consumer] = []

    def make(group: str, **overrides: object) -> Consumer:
        config: dict[str, object] = {
            "bootstrap.servers": brokers.kafka_bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "partition.assignment.strategy": "cooperative-sticky",
            **overrides,
        }
        instance = Consumer(config)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.close()
