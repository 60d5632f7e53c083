"""The video-service API against a real broker: 202 once Kafka has it, a clear 4xx for bad input."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from ott.video_service import create_app
from tests.runtime_fixtures import (
    CONFORMANCE,
    NestedBody,
    assert_nesting_answered,
    jwt_guard,
    nested_bodies,
)
from tide.auth import OPEN, Guard
from tide.bodies import MAX_DEPTH
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port

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


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, 945, 950, 1000, 1023, 1024, 2000])
def test_deep_nesting_is_refused_with_a_400_naming_it_never_a_500(
    api: TestClient, depth: int
) -> None:
    # 950 to 1,023 levels passed orjson, then hit Python's recursion limit in a second
    # parse for duplicate keys: a 500 with a traceback.
    body = b'{"type":"video.rated","data":' + b"[" * depth + b"]" * depth + b"}"
    response = api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    if depth + 1 > MAX_DEPTH:
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "nested too deep",
            "detail": f"arrays and objects nested deeper than {MAX_DEPTH} levels (at char"
            f" {29 + MAX_DEPTH - 1})",
        }
    else:
        assert response.status_code == 422, response.text
        assert "data" in response.json()["detail"]


def test_unreachable_kafka_is_a_503_at_once_saying_a_retry_is_safe(catalog: Catalog) -> None:
    # The API used to wait out its publish timeout while its own readiness already said
    # Kafka was down, and then said "not accepted" of events it could not know about.
    publish_timeout_s = 30
    publisher = EventPublisher(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}"},
        EventCodec(catalog),
        timeout_s=publish_timeout_s,
    )
    with TestClient(create_app(catalog, publisher, max_body_bytes=MAX_BODY)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "Kafka unreachable" in ready.json()["detail"]
        assert ready.headers["retry-after"] == "1"
        asked = time.monotonic()
        response = client.post("/v1/events", json=started(), headers={"idempotency-key": "k-9"})
        answered_s = time.monotonic() - asked
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    problem = response.json()
    assert problem["error"] == "event not accepted"
    assert "Kafka unreachable" in problem["detail"]
    assert "it was not sent" in problem["detail"]
    assert "same Idempotency-Key, or the same event id, is safe" in problem["detail"]
    assert answered_s < publish_timeout_s / 3, f"answered after {answered_s:.1f} s"


def _schemathesis_app(brokers: Brokers, catalog: Catalog, guard: Guard) -> FastAPI:
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    return create_app(catalog, publisher, max_body_bytes=MAX_BODY, guard=guard)


# Fuzzed open, as a cluster stack with a token runs it, and without the token it needs:
# no 5xx in any, and without credentials nothing but 401.
CREDENTIALS = ["open", "token", "no token"]


@pytest.mark.parametrize("credentials", CREDENTIALS)
def test_generated_requests_get_a_documented_answer_never_a_5xx(
    brokers: Brokers, catalog: Catalog, issuer: LocalIssuer, credentials: str
) -> None:
    guard = OPEN if credentials == "open" else jwt_guard(issuer)
    headers = issuer.headers("fuzz") if credentials == "token" else {}
    examples = 20 if credentials == "no token" else 60
    seen: list[int] = []
    for mode in GenerationMode:  # valid requests, and invalid ones on purpose
        # An app per run: leaving its lifespan closes its publisher.
        app = _schemathesis_app(brokers, catalog, guard)
        operation = schemathesis.openapi.from_asgi("/openapi.json", app)["/v1/events"]["POST"]

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def conforms(case: schemathesis.Case) -> None:
            response = case.call(headers={**(case.headers or {}), **headers})
            seen.append(response.status_code)
            case.validate_response(response, checks=CONFORMANCE)

        with TestClient(app):  # runs the lifespan, so the publisher is flushed at the end
            conforms()
    print(f"\nvideo-service fuzz ({credentials}): {len(seen)} requests, {dict(Counter(seen))}")
    if credentials == "no token":
        assert set(seen) == {401}, Counter(seen)
        return
    # Bodies nested to any depth: no generator draws those from the document.
    app = _schemathesis_app(brokers, catalog, guard)
    with TestClient(app, headers=headers) as client:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=nested_bodies({"type": "video.rated", "data": {"user_id": "u1"}}))
        def deep(body: NestedBody) -> None:
            response = client.post(
                "/v1/events", content=body.content, headers={"content-type": "application/json"}
            )
            seen.append(response.status_code)
            assert_nesting_answered(response.status_code, response.json(), body, MAX_BODY)

        deep()
    assert len(seen) >= 40
    assert 202 in seen, "no generated request was accepted"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_only_json_media_types_are_taken(api: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = api.post("/v1/events", content=json.dumps(started()).encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"] == "unsupported media type"


def test_a_key_given_twice_is_refused_not_the_last_one_winning(api: TestClient) -> None:
    body = b'{"type": "video.watch.started", "type": "video.rated", "data": {}}'
    response = api.post("/v1/events", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "key 'type' given twice" in response.json()["detail"]


def test_a_body_without_a_length_is_refused_once_it_passes_the_limit(served: int) -> None:
    # Chunked, so no Content-Length: the API must refuse it while it streams, not after
    # buffering it whole (100 MB took the process from 158 to 260 MiB before its 413).
    total, sent = 100 * 1024 * 1024, 0
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", served), timeout=30) as client:
        client.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answered = False
        while sent < total and not answered:
            try:
                client.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed
            sent += 0x10000
            answered = bool(select.select([client], [], [], 0)[0])
        answer = client.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert sent < total / 10, f"{sent} bytes were taken before the refusal"


def test_a_body_that_stops_arriving_is_given_up_with_408(served: int) -> None:
    with socket.create_connection(("127.0.0.1", served), timeout=30) as client:
        client.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"type": '  # and then nothing more
        )
        answer = client.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within" in answer


@pytest.fixture
def served(brokers: Brokers, catalog: Catalog) -> Iterator[int]:
    """The API on a real uvicorn server (TestClient buffers request bodies); its port."""
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )
    port = free_port()
    app = create_app(catalog, publisher, max_body_bytes=MAX_BODY)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="the API listening")
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        publisher.close()


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(api: TestClient) -> None:
    headers = {"content-type": "application/json", "idempotency-key": "order-42"}
    body = json.dumps(started(user_id="idem"))
    first = api.post("/v1/events", content=body, headers=headers)
    again = api.post("/v1/events", content=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json(), "a retry is answered as the first attempt was"
    assert again.headers["idempotent-replayed"] == "true"
    other = api.post("/v1/events", content=json.dumps(started(user_id="other")), headers=headers)
    assert other.status_code == 422, other.text
    assert "was used for a different request" in other.json()["detail"]
    bad = api.post("/v1/events", content=body, headers={**headers, "idempotency-key": "a b"})
    assert bad.status_code == 400, bad.text


def test_a_retry_with_the_clients_own_event_id_gets_the_first_answer(api: TestClient) -> None:
    headers = {"content-type": "application/json"}
    body = {**started(user_id="own-id"), "id": "player-7:evt-0001"}
    first = api.post("/v1/events", json=body, headers=headers)
    again = api.post("/v1/events", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert first.json()["id"] == "player-7:evt-0001", "the client's id is the event id"
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = api.post("/v1/events", json={**started(user_id="x"), "id": body["id"]})
    assert other.status_code == 422, other.text
    assert "id 'player-7:evt-0001' was used for a different request" in other.json()["detail"]
    both = api.post("/v1/events", json=body, headers={"idempotency-key": "k-1"})
    assert both.status_code == 422, both.text
    assert "not both" in both.json()["detail"]
