"""The video-service API against a real broker: 202 once Kafka has it, a clear 4xx for bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.harness import Brokers
from tests.harness.process import free_port
from tide.apps.video_service import create_app
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog

pytestmark = pytest.mark.timeout(180)
MAX_BODY = 4096


@pytest.fixture
def api(brokers: Brokers, catalog: Catalog) -> Iterator[TestClient]:
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    with TestClient(create_app(catalog, publisher, max_body_bytes=MAX_BODY)) as client:
        yield client


def started(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "user_id": "u1",
        "video_id": "v1",
        "session_id": "s1",
        "device": "web",
    }
    data.update(overrides)
    return {"type": "video.watch.started", "data": data}


def test_accepted_event_is_answered_202_with_where_kafka_put_it(
    api: TestClient, catalog: Catalog
) -> None:
    response = api.post("/v1/events", json=started())
    assert response.status_code == 202
    body = response.json()
    assert body["topic"] == catalog.event("video.watch.started").topic
    assert body["offset"] >= 0


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "malformed JSON"),
        (
            json.dumps({"type": "video.paused", "data": {}}).encode(),
            422,
            "'video.paused'; accepted: ",
        ),
        (json.dumps(started(device="toaster")).encode(), 422, "field 'device'"),
        (json.dumps(started(rating=5)).encode(), 422, "'rating' was unexpected"),
        (json.dumps({"type": "video.rated"}).encode(), 422, "data"),
        (json.dumps({"type": "content.published", "data": {}}).encode(), 422, "unknown event type"),
        (b"x" * (MAX_BODY + 1), 413, f"at most {MAX_BODY} bytes"),
        # Bounds every consumer and store can hold (#16): personalization's double
        # precision sum overflowed on 1e308 twice; the id travels in AMQP headers.
        (json.dumps(started(position_s=1e308)).encode(), 422, "field 'position_s'"),
        (
            json.dumps(
                {
                    "type": "video.watch.completed",
                    "data": {
                        "user_id": "u1",
                        "video_id": "v1",
                        "session_id": "s1",
                        "watched_s": 1e308,
                        "finished": True,
                    },
                }
            ).encode(),
            422,
            "field 'watched_s'",
        ),
        (
            json.dumps({**started(), "correlation_id": "\U0001f600" * 100}).encode(),
            422,
            "correlation_id",
        ),
        (json.dumps({**started(), "correlation_id": "c1\n"}).encode(), 422, "correlation_id"),
    ],
)
def test_bad_input_gets_a_4xx_that_names_the_problem(
    api: TestClient, body: bytes, status: int, says: str
) -> None:
    response = api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert says in response.text


def test_unreachable_kafka_is_a_503_and_readiness_says_why(catalog: Catalog) -> None:
    publisher = EventPublisher(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}"}, EventCodec(catalog), timeout_s=1
    )
    with TestClient(create_app(catalog, publisher, max_body_bytes=MAX_BODY)) as client:
        response = client.post("/v1/events", json=started())
        assert response.status_code == 503
        assert response.json()["error"] == "event not accepted"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "Kafka unreachable" in ready.json()["detail"]


def _schemathesis_app(brokers: Brokers, catalog: Catalog) -> FastAPI:
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    return create_app(catalog, publisher, max_body_bytes=MAX_BODY)


def test_generated_requests_never_get_a_5xx(brokers: Brokers, catalog: Catalog) -> None:
    app = _schemathesis_app(brokers, catalog)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema["/v1/events"]["POST"]
    seen: list[int] = []

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def never_5xx(case: schemathesis.Case) -> None:
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, f"{response.status_code}: {response.text}"

    with TestClient(app):  # runs the lifespan, so the publisher is flushed at the end
        never_5xx()
    assert len(seen) >= 20
