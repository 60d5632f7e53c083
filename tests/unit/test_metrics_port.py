"""/metrics on a port of its own: the one only Prometheus's Service exposes."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tide.health import health_app, metrics_apart
from tide_dev.ports import free_port


def test_metrics_leave_the_http_port_for_their_own() -> None:
    app = health_app(lambda: None)
    port = free_port()
    metrics_apart(app, port)
    client = TestClient(app)
    assert client.get("/metrics").status_code == 404
    assert client.get("/healthz").status_code == 200  # the probes stay where they were
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert "tide_api_request_duration_seconds" in scraped.text
