"""The event-sourced subscription service on real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import schemathesis
import uvicorn
from confluent_kafka import Consumer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from ott.subscription import MAX_BODY_BYTES, OVERVIEW, POOL_SIZE, create_app
from tests.conftest import unique
from tests.runtime_fixtures import (
    CONFORMANCE,
    NestedBody,
    assert_nesting_answered,
    jwt_guard,
    nested_bodies,
)
from tide.auth import OPEN
from tide.bodies import MAX_DEPTH
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.store.event_store import EventStore
from tide.store.projections import ProjectionRunner
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers, BrokerSession
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def role(broker_session: BrokerSession, catalog: Catalog, database: str) -> str:
    """The DSN of the subscription service's own role, granted as on a cluster."""
    roles = broker_session.own_postgres("the service runs as its role").service_roles(catalog)
    return roles["subscription"]["TIDE_POSTGRES_DSN"]


@pytest.fixture
def service(brokers: Brokers, catalog: Catalog, role: str) -> Iterator[TestClient]:
    """The app as its process runs it: as its own database role (event store, outbox relay,
    snapshots, projection), so a grant it lacks fails here."""
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    with TestClient(create_app(role, publisher)) as client:
        yield client


def _overview(database: str, subscription: str) -> tuple[object, ...] | None:
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT status, payments, paid_cents FROM subscription_overview"
            " WHERE subscription_id = %s",
            (subscription,),
        ).fetchone()


async def test_commands_fold_into_state_with_snapshots_payments_and_a_rebuildable_projection(
    brokers: Brokers, catalog: Catalog, database: str, role: str, service: TestClient
) -> None:
    sub = unique("sub")
    started = service.post(
        f"/v1/subscriptions/{sub}/start", json={"user_id": "u7", "plan": "standard"}
    )
    assert started.status_code == 200, started.text
    assert started.json() | {} == {
        **started.json(),
        "status": "active",
        "version": 2,
        "payments": 1,
    }
    for _ in range(4):
        assert service.post(f"/v1/subscriptions/{sub}/renew").status_code == 200
    cancelled = service.post(f"/v1/subscriptions/{sub}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["version"] == 7

    refused = service.post(f"/v1/subscriptions/{sub}/renew")
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"subscription {sub!r} is cancelled, not active"
    again = service.post(f"/v1/subscriptions/{sub}/start", json={"user_id": "u7", "plan": "basic"})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    bad = service.post(f"/v1/subscriptions/{sub}/start", json={"user_id": "u7", "plan": "gold"})
    assert bad.status_code == 422

    # Snapshot every 5 versions; the state read back folds the snapshot and what followed.
    store = EventStore(role)
    conn = await store.connect()
    async with conn:
        snapshot = await store.load_snapshot(conn, sub)
    assert snapshot is not None
    assert snapshot.version == 5
    state = service.get(f"/v1/subscriptions/{sub}").json()
    assert (state["status"], state["payments"], state["version"]) == ("cancelled", 5, 7)

    # The five payments left through the outbox onto payment-events.
    topic = str(catalog.event("payment.captured").topic)
    reader = Consumer(
        {
            "bootstrap.servers": brokers.kafka_bootstrap,
            "group.id": unique("r"),
            "auto.offset.reset": "earliest",
        }
    )
    reader.subscribe([topic])
    seen: set[str] = set()
    codec = EventCodec(catalog)
    try:

        def five_payments() -> bool:
            message = reader.poll(0.5)
            if message is not None and message.error() is None:
                event = codec.decode(topic, message.value(), message.headers())  # type: ignore[arg-type]
                if event.data["subscription_id"] == sub:
                    seen.add(event.id)
            return len(seen) >= 5

        wait_until(five_payments, timeout=60, what="5 payments on Kafka", interval=0)
    finally:
        reader.close()
    assert len(seen) == 5

    # The projection keeps up, and replaying everything rebuilds the same read model.
    wait_until(
        lambda: _overview(database, sub) == ("cancelled", 5, 4995), timeout=30, what="projection"
    )
    conn = await store.connect()
    async with conn:
        await ProjectionRunner(store, OVERVIEW).rebuild(conn)
    assert _overview(database, sub) == ("cancelled", 5, 4995)


def test_reading_an_unknown_subscription_is_a_404(service: TestClient) -> None:
    response = service.get(f"/v1/subscriptions/{unique('none')}")
    assert response.status_code == 404


@pytest.mark.parametrize(
    "subscription",
    ["repro%20id", "a%00b", "x" * 65, "caf%C3%A9", "trailing%0A"],
    ids=["space", "nul", "65 chars", "non-ascii", "newline"],
)
def test_an_id_the_payment_event_cannot_carry_is_refused_at_the_edge(
    service: TestClient, subscription: str
) -> None:
    """Such an id used to be accepted with 200 and then stop the outbox relay for good."""
    for response in (
        service.post(
            f"/v1/subscriptions/{subscription}/start", json={"user_id": "u1", "plan": "basic"}
        ),
        service.post(f"/v1/subscriptions/{subscription}/renew"),
        service.get(f"/v1/subscriptions/{subscription}"),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["detail"].startswith("path.subscription_id: ")


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"[NaN]", "application/json", 400),
        (b'{"user_id": "\\ud800", "plan": "basic"}', "application/json", 400),
        (b'{"user_id": "u1", "user_id": "u2", "plan": "basic"}', "application/json", 400),
        (b'{"user_id": "u1", "plan": "basic"}', "text/plain", 415),
        (b'{"user_id": "u1", "plan": "gold"}', "application/json", 422),
        (b"[]", "application/json", 422),
    ],
    ids=["NaN", "lone surrogate", "duplicate key", "text/plain", "unknown plan", "not an object"],
)
def test_a_start_body_the_api_cannot_take_is_a_4xx_never_a_500(
    service: TestClient, body: bytes, content_type: str, status: int
) -> None:
    # NaN and a lone surrogate were 500s: FastAPI's 422 echoed an input JSON cannot encode.
    response = service.post(
        f"/v1/subscriptions/{unique('sub')}/start",
        content=body,
        headers={"content-type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.json()["detail"], response.text


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, 950, 1000, 1023, 1024, 2000])
def test_a_deeply_nested_start_body_is_a_400_naming_it_never_a_500(
    service: TestClient, depth: int
) -> None:
    body = b'{"user_id":"u1","plan":' + b"[" * depth + b"]" * depth + b"}"
    response = service.post(
        f"/v1/subscriptions/{unique('sub')}/start",
        content=body,
        headers={"content-type": "application/json"},
    )
    if depth + 1 > MAX_DEPTH:
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "nested too deep", response.text
        assert f"deeper than {MAX_DEPTH} levels" in response.json()["detail"]
    else:
        assert response.status_code == 422, response.text


def test_300_concurrent_requests_are_all_answered_from_a_bounded_pool(
    brokers: Brokers, catalog: Catalog, database: str
) -> None:
    # One connection per request used to run PostgreSQL out of them: 112 of 300 got 500.
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(database, publisher), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="the API listening")
        statuses, shed_with_retry_after = asyncio.run(
            _concurrent_reads(f"http://127.0.0.1:{port}", 300)
        )
        busiest = _connections(database)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert sum(statuses.values()) == 300, statuses
    assert set(statuses) <= {404, 503}, f"answers other than 404 or a shed 503: {statuses}"
    assert statuses[503] == shed_with_retry_after, "a shed 503 without Retry-After"
    assert statuses[404] > 0, statuses
    assert 0 < busiest <= POOL_SIZE, f"{busiest} pooled connections, the pool holds {POOL_SIZE}"


async def _concurrent_reads(base: str, count: int) -> tuple[Counter[int], int]:
    """The answers' statuses, and how many 503s carried Retry-After."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        answers = await asyncio.gather(
            *(client.get(f"/v1/subscriptions/{unique('none')}") for _ in range(count))
        )
    shed = [a for a in answers if a.status_code == 503]
    return Counter(a.status_code for a in answers), sum("retry-after" in a.headers for a in shed)


def _connections(database: str) -> int:
    """Connections the API's request pool holds now."""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tide-subscription-api'"
        ).fetchone()
    return int(row[0]) if row else 0


# The app's request pool opens connections in the app's own thread while Hypothesis draws
# cases on this one, and psycopg_pool jitters each connection's lifetime with the global
# `random`. When the two overlap, Hypothesis sees the global state move during a draw and
# warns that a strategy used `random`; no strategy did, and the draw stays reproducible.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
@pytest.mark.parametrize("credentials", ["open", "token", "no token"])
def test_generated_requests_to_every_operation_get_a_documented_answer_never_a_5xx(
    brokers: Brokers, catalog: Catalog, database: str, issuer: LocalIssuer, credentials: str
) -> None:
    # Open, as a cluster stack with a token runs it, and without the token it needs.
    guard = OPEN if credentials == "open" else jwt_guard(issuer)
    headers = issuer.headers("fuzz") if credentials == "token" else {}
    examples = 10 if credentials == "no token" else 25
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    app = create_app(database, publisher, guard=guard)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: Counter[int] = Counter()
    guarded: Counter[int] = Counter()  # the answers of the operations behind credentials
    # Each call runs the app's lifespan (its own request pool, in its own event loop).
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation, mode in itertools.product(operations, list(GenerationMode)):
        if mode is GenerationMode.NEGATIVE and not operation.path.startswith("/v1/"):
            continue  # the probes take no input there is to get wrong
        strategy = operation.as_strategy(generation_mode=mode)  # valid, and invalid on purpose

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def conforms(case: schemathesis.Case) -> None:
            response = case.call(headers={**(case.headers or {}), **headers})
            seen[response.status_code] += 1
            if case.operation.path.startswith("/v1/"):
                guarded[response.status_code] += 1
            case.validate_response(response, checks=CONFORMANCE)

        conforms()
    print(f"\nsubscription fuzz ({credentials}): {sum(seen.values())} requests, {dict(seen)}")
    if credentials == "no token":
        publisher.close()
        assert set(guarded) == {401}, guarded
        return

    # Start bodies nested to any depth: no generator draws those from the document.
    with TestClient(app, headers=headers) as client:

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=nested_bodies({"user_id": "u1", "plan": "basic"}))
        def deep(body: NestedBody) -> None:
            response = client.post(
                f"/v1/subscriptions/{unique('sub')}/start",
                content=body.content,
                headers={"content-type": "application/json"},
            )
            seen[response.status_code] += 1
            assert_nesting_answered(response.status_code, response.json(), body, MAX_BODY_BYTES)

        deep()
    publisher.close()
    assert sum(seen.values()) >= 100, seen
    assert 200 in guarded, "no generated command was carried out"
