"""A dependency that does not answer is the platform's fault, not the record's (#15.6): a
consumer leaves the record where it is instead of dead-lettering it as undecodable, and
the APIs answer 503 naming what is down instead of 500.

The registry here is an address nothing listens on (a registry that is down, met with a
cold cache); no registry installs on this machine, so its 5xx answers are not exercised.
"""

from __future__ import annotations

import json
import struct

import pytest
from fastapi.testclient import TestClient

from ott.subscription import create_app as create_subscription_app
from ott.video_service import create_app
from tests.integration.test_consumer_runner import fast_retries, rating
from tide.codecs.json_schema import EventCodec, RegistryUnavailableError
from tide.errors import PlatformUnavailableError
from tide.kafka.processing import Record, RecordProcessor
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide_dev import Brokers
from tide_dev.ports import free_port

pytestmark = pytest.mark.timeout(120)


def _down_registry() -> str:
    return f"http://127.0.0.1:{free_port()}"  # free: nothing listens there


def test_a_record_in_registry_format_waits_in_place_while_the_registry_is_down(
    catalog: Catalog, database: str, publisher: EventPublisher
) -> None:
    event = rating("registry-user")
    # The Confluent wire format: magic byte 0, a schema id, then the JSON.
    value = b"\x00" + struct.pack(">I", 7) + json.dumps(dict(event.data)).encode()
    topic = str(catalog.event("video.rated").topic)
    record = Record(topic, 0, 42, b"registry-user", value, event.kafka_headers(dataschema=""))
    processor = RecordProcessor(
        group=fast_retries(catalog),
        handler=lambda _event, _ctx: None,
        codec=EventCodec(catalog, _down_registry()),
        database=database,
        publisher=publisher,
        source="/test",
    )
    try:
        [outcome] = processor.process_batch([record])
    finally:
        processor.close()
    assert outcome.route is None, f"routed to {outcome.route} while the registry was down"
    assert isinstance(outcome.unavailable, RegistryUnavailableError)
    assert "schema registry unavailable" in str(outcome.unavailable)


def test_the_api_answers_503_naming_the_registry_when_it_is_down(
    brokers: Brokers, catalog: Catalog
) -> None:
    registry = _down_registry()
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap},
        EventCodec(catalog, registry),
        timeout_s=10,
    )
    body = {
        "type": "video.watch.started",
        "data": {"user_id": "u1", "video_id": "v1", "session_id": "s1", "device": "web"},
    }
    with TestClient(create_app(catalog, publisher, max_body_bytes=4096)) as api:
        response = api.post("/v1/events", json=body)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["error"] == "event not accepted"
    assert "schema registry unavailable" in problem["detail"]
    assert "it was not sent" in problem["detail"]
    assert issubclass(RegistryUnavailableError, PlatformUnavailableError)


def test_the_subscription_api_answers_503_naming_postgresql_when_it_is_down(
    brokers: Brokers, catalog: Catalog
) -> None:
    down = f"postgresql://tide@127.0.0.1:{free_port()}/tide"
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    with TestClient(create_subscription_app(down, publisher)) as api:
        response = api.post(
            "/v1/subscriptions/sub-1/start", json={"user_id": "u1", "plan": "basic"}
        )
        ready = api.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == "unavailable"
    assert "connection" in response.json()["detail"]
    assert ready.status_code == 503
    assert "PostgreSQL unreachable" in ready.json()["detail"]
