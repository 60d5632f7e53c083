"""A consumer loop that stops going round fails /healthz with its group's name, and passes
again once it moves (issue #15, liveness that tells the truth)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.integration.test_consumer_runner import fast_retries, rating
from tests.runtime_fixtures import running_runner
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext
from tide.health import health_app
from tide.kafka.producer import EventPublisher
from tide.liveness import Liveness
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(120)
BOUND_S = 3.0  # the process default is tide.liveness.LOOP_BOUND_S; short here


def _status(client: TestClient) -> tuple[int, Any]:
    response = client.get("/healthz")
    body = response.json() if response.status_code != 200 else response.text
    return response.status_code, body


def test_a_loop_stuck_in_a_batch_fails_liveness_naming_its_group_then_recovers(
    brokers: Brokers, catalog: Catalog, database: str, publisher: EventPublisher
) -> None:
    group = fast_retries(catalog)
    client_config = {"bootstrap.servers": brokers.kafka_bootstrap}
    entered, release = threading.Event(), threading.Event()

    def blocks(_event: CloudEvent, _ctx: HandlerContext) -> None:
        # A call that does not return (a hung connection, a deadlock): the loop stops.
        entered.set()
        release.wait(60)

    liveness = Liveness()
    with running_runner(
        catalog,
        group,
        blocks,
        codec=EventCodec(catalog),
        database=database,
        publisher=publisher,
        client=client_config,
        heartbeat=liveness.heartbeat(f"group {group.name}", BOUND_S),
    ):
        health = TestClient(health_app(lambda: None, liveness.problem))
        try:
            assert _status(health) == (200, "ok")
            publisher.publish(rating("stuck-user"))
            wait_until(entered.is_set, timeout=60, what="the handler to be entered")
            wait_until(lambda: _status(health)[0] == 503, timeout=BOUND_S + 20, what="/healthz 503")
            code, body = _status(health)
            assert code == 503
            assert body["error"] == "not alive"
            assert f"group {group.name}: no progress for" in body["detail"]
            release.set()
            wait_until(lambda: _status(health)[0] == 200, timeout=30, what="/healthz 200 again")
        finally:
            release.set()
