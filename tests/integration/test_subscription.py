"""The event-sourced subscription service on real PostgreSQL and Kafka."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from tests.conftest import unique
from tests.harness import Brokers
from tide.apps.subscription import OVERVIEW, create_app
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.store.event_store import EventStore
from tide.store.projections import ProjectionRunner
from tide.topology import Catalog
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def service(brokers: Brokers, catalog: Catalog, database: str) -> Iterator[TestClient]:
    publisher = EventPublisher({"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog))
    with TestClient(create_app(database, publisher)) as client:
        yield client


def _overview(database: str, subscription: str) -> tuple[object, ...] | None:
    with psycopg.connect(database) as conn:
        return conn.execute(
            "SELECT status, payments, paid_cents FROM subscription_overview"
            " WHERE subscription_id = %s",
            (subscription,),
        ).fetchone()


async def test_commands_fold_into_state_with_snapshots_payments_and_a_rebuildable_projection(
    brokers: Brokers, catalog: Catalog, database: str, service: TestClient
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
    store = EventStore(database)
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
        assert response.json()["detail"][0]["loc"] == ["path", "subscription_id"]
