"""Fixtures for runtime tests (integration and chaos): a migrated database, private topics."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.auth import AuthMode, Guard, guard_from
from tide.bodies import MAX_DEPTH
from tide.codecs.json_schema import EventCodec
from tide.handlers import Handler
from tide.kafka import wedge
from tide.kafka.consumer import ConsumerRunner
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import EventPublisher
from tide.kafka.topics import ensure_topics
from tide.liveness import Heartbeat
from tide.rabbitmq.bus import QueueConsumer
from tide.rabbitmq.definitions import definitions
from tide.store.migrations import migrate
from tide.topology import Catalog, ConsumerGroup, Topic
from tide_dev import Brokers, BrokerSession
from tide_dev.chaos.processes import LocalPlatform
from tide_dev.issuer import LocalIssuer

# What every fuzzed answer of a Tide API must hold: no 5xx, and a status, media type and
# body its OpenAPI document declares (the document is what clients are generated from).
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class NestedBody:
    """A JSON body with arrays or objects nested `depth` levels deep in all."""

    content: bytes
    depth: int

    @property
    def too_deep(self) -> bool:
        return self.depth > MAX_DEPTH


def _nest(body: dict[str, object], key: str | None, levels: int, opener: str) -> NestedBody:
    closer = "]" if opener == "[" else "}"
    nested = opener * levels + "1" + closer * levels
    if key is None:
        return NestedBody(nested.encode(), levels)
    content = json.dumps({**body, key: "@nested@"}).replace('"@nested@"', nested)
    return NestedBody(content.encode(), levels + 1)


def assert_nesting_answered(
    status: int, answer: dict[str, Any], body: NestedBody, limit: int
) -> None:
    """What an API must answer to a nested body: 413 past the size limit, 400 naming the
    depth past the nesting limit, else its own validation refusal; a Problem body always."""
    if len(body.content) > limit:
        assert status == 413, answer
    elif body.too_deep:
        assert status == 400, answer
        assert answer["error"] == "nested too deep", answer
    else:
        assert status in {400, 422}, (body.depth, answer)
    assert set(answer) == {"error", "detail"}, answer


def nested_bodies(body: dict[str, object]) -> st.SearchStrategy[NestedBody]:
    """`body` with one of its values, or the whole of it, replaced by arrays or objects nested
    from flat to far past every parser's limit: orjson's 1,023 levels, Python's recursion
    limit, and the 950 to 1,023 between them that used to be a 500."""
    depths = st.integers(0, 3000) | st.sampled_from([MAX_DEPTH, 950, 1000, 1023, 1024])
    return st.builds(
        _nest,
        st.just(body),
        st.sampled_from([None, *body]),
        depths,
        st.sampled_from(["[", '{"k":']),
    )


@pytest.fixture(scope="session")
def database(brokers: Brokers) -> str:
    """The harness's PostgreSQL with Tide's schema applied (idempotently)."""
    migrate(brokers.postgres_dsn, CATALOG)
    return brokers.postgres_dsn


def create_topics(bootstrap: str, topics: list[Topic]) -> None:
    ensure_topics({"bootstrap.servers": bootstrap}, topics)


@pytest.fixture(scope="session")
def issuer() -> Iterator[LocalIssuer]:
    """An OAuth issuer on loopback: its signing key made at start, its JWKS served."""
    with LocalIssuer() as started:
        yield started


def jwt_guard(issuer: LocalIssuer) -> Guard:
    """An API's guard that takes `issuer`'s tokens, as a cluster stack's does."""
    return guard_from(
        AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url
    )


@pytest.fixture
def catalog(brokers: Brokers) -> Iterator[Catalog]:
    """The reference catalog with unique topic and group names, its topics created."""
    isolated = CATALOG.isolated(unique("t"))
    create_topics(brokers.kafka_bootstrap, list(isolated.all_topics()))
    yield isolated
    admin = AdminClient({"bootstrap.servers": brokers.kafka_bootstrap})
    for future in admin.delete_topics(
        list(isolated.all_topic_names()), operation_timeout=30
    ).values():
        future.result(timeout=60)


@pytest.fixture
def publisher(brokers: Brokers, catalog: Catalog) -> Iterator[EventPublisher]:
    instance = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    yield instance
    assert instance.close() == 0


@dataclass
class RunningGroup:
    group: ConsumerGroup
    publisher: EventPublisher
    thread: threading.Thread
    request_stop: Callable[[], None]

    def stop(self) -> None:
        if not self.thread.is_alive():  # stopped already, by the test itself
            return
        self.request_stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "runner did not stop within 30s"


@pytest.fixture
def run_group(
    brokers: Brokers, database: str, catalog: Catalog
) -> Iterator[Callable[[ConsumerGroup, Handler], RunningGroup]]:
    """Factory: run a group in a thread on the consumer runner, as `tide run` does; the
    group's side topics are created first."""
    running: list[RunningGroup] = []
    processors: list[RecordProcessor] = []

    def start(group: ConsumerGroup, handler: Handler) -> RunningGroup:
        if group.name not in {g.name for g in catalog.consumer_groups} or group != catalog.group(
            group.name
        ):
            create_topics(brokers.kafka_bootstrap, list(catalog.side_topics(group)))
        client = {"bootstrap.servers": brokers.kafka_bootstrap}
        codec = EventCodec(catalog)
        publisher = EventPublisher(client, codec, timeout_s=10)
        processor = RecordProcessor(
            group=group,
            handler=handler,
            codec=codec,
            database=database,
            publisher=publisher,
            source=f"/{group.service}",
        )
        processors.append(processor)
        runner = ConsumerRunner(group, processor, client)
        thread = threading.Thread(target=runner.run, name=f"group-{group.name}", daemon=True)
        request_stop = runner.stop
        thread.start()
        handle = RunningGroup(group, publisher, thread, request_stop)
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.stop()
        handle.publisher.close()
    for processor in processors:
        processor.close()


def load_topology(broker_session: BrokerSession, catalog: Catalog) -> None:
    """Load the catalog's RabbitMQ topology into the harness's own node."""
    node = broker_session.own_rabbitmq("these tests load the catalog's topology into it")
    node.import_definitions(definitions(catalog))


@pytest.fixture
def rabbit_catalog(brokers: Brokers, broker_session: BrokerSession) -> Catalog:
    """A private copy of the catalog whose RabbitMQ topology is loaded into the harness's node."""
    isolated = CATALOG.isolated(unique("q"))
    load_topology(broker_session, isolated)
    return isolated


@pytest.fixture
def quick_wedge(monkeypatch: pytest.MonkeyPatch) -> None:
    """tide.kafka.wedge's grace and probe interval cut to test size."""
    monkeypatch.setattr(wedge, "KAFKA_ANSWERS_FOR_S", 1.0)
    monkeypatch.setattr(wedge, "PRODUCER_ANSWERS_FOR_S", 1.0)
    monkeypatch.setattr(wedge, "PROBE_EVERY_S", 0.5)


def producer_replacements() -> float:
    return REGISTRY.get_sample_value("tide_producer_replacements_total") or 0.0


@pytest.fixture(scope="session")
def effects_table(database: str) -> str:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_effects (consumer text NOT NULL,"
            " event_id text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    return "test_effects"


@contextmanager
def running_runner(
    catalog: Catalog,
    group: ConsumerGroup,
    handler: Handler,
    *,
    codec: EventCodec,
    database: str,
    publisher: EventPublisher,
    client: dict[str, str],
    heartbeat: Heartbeat | None = None,
) -> Iterator[ConsumerRunner]:
    """The sync runner for `group` on a thread, for tests that reach into it (its heartbeat,
    its codec); stopped, joined and its database connection closed on the way out."""
    ensure_topics(client, catalog.side_topics(group))
    processor = RecordProcessor(
        group=group,
        handler=handler,
        codec=codec,
        database=database,
        publisher=publisher,
        source="/test",
    )
    runner = ConsumerRunner(group, processor, client, heartbeat=heartbeat)
    thread = threading.Thread(target=runner.run, name=f"runner-{group.name}", daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(timeout=30)
        processor.close()
    assert not thread.is_alive(), "runner did not stop within 30s"


@pytest.fixture
def platform(
    brokers: Brokers,
    broker_session: BrokerSession,
    database: str,
    issuer: LocalIssuer,
    tmp_path: Path,
) -> Iterator[tuple[Catalog, LocalPlatform]]:
    """A private copy of the platform (suffixed names), its services run by `tide run`;
    its APIs take only `issuer`'s tokens (`LocalPlatform.credentials`)."""
    suffix = unique("p")
    catalog = CATALOG.isolated(suffix)
    create_topics(brokers.kafka_bootstrap, list(catalog.all_topics()))
    load_topology(broker_session, catalog)
    # Each service as its own database role, as on a cluster.
    roles = broker_session.own_postgres("the services get roles of their own").service_roles(
        catalog
    )
    env = {**brokers.as_env(), "TIDE_CATALOG_SUFFIX": suffix}
    processes = LocalPlatform(env, tmp_path, env_of=roles, issuer=issuer)
    yield catalog, processes
    problems = processes.stop()
    assert not problems, f"services did not drain on SIGTERM: {problems}"


def queue_consumer(
    brokers: Brokers, database: str, catalog: Catalog, handler: Handler
) -> QueueConsumer:
    """The catalog's one queue worker, on the session's RabbitMQ and `database`."""
    (worker,) = catalog.queue_workers
    return QueueConsumer(
        worker,
        handler,
        EventCodec(catalog),
        rabbitmq_url=brokers.rabbitmq_url,
        postgres_dsn=database,
        source="/test-worker",
    )
