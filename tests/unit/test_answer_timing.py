"""Every answer an API gives is timed by its status, whatever its route returns or raises:
`tide run` times the APIs it serves (tide.health.time_answers), a team's as well as Tide's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import BaseModel

from tide.errors import PlatformUnavailableError
from tide.health import add_health_routes, time_answers

pytestmark = pytest.mark.unit


class Order(BaseModel):
    order_id: str


def _answers(status: int) -> float:
    labels = {"status": str(status)}
    return REGISTRY.get_sample_value("tide_api_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
def client() -> Iterator[TestClient]:
    """An API written as a team writes one: routes that return models, not Responses."""
    app = FastAPI()

    @app.post("/orders", status_code=202)
    async def place(order: Order) -> Order:
        if order.order_id == "down":
            raise PlatformUnavailableError("Kafka is not answering")
        return order

    add_health_routes(app, lambda: None)
    time_answers(app)
    time_answers(app)  # as `tide run` does again for an app that timed itself
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_each_answer_is_timed_once_by_its_status(client: TestClient) -> None:
    statuses = (202, 422, 503, 404)
    before = {status: _answers(status) for status in statuses}
    assert client.post("/orders", json={"order_id": "o-1"}).status_code == 202
    assert client.post("/orders", json={"order_id": "o-2"}).status_code == 202
    assert client.post("/orders", json={}).status_code == 422  # refused before the route
    assert client.post("/orders", json={"order_id": "down"}).status_code == 503
    assert client.get("/nowhere").status_code == 404
    counted = {status: _answers(status) - before[status] for status in statuses}
    assert counted == {202: 2, 422: 1, 503: 1, 404: 1}


def test_probes_and_the_scrape_are_not_answers_to_clients(client: TestClient) -> None:
    before = _answers(200)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200
    assert _answers(200) == before
