"""Readiness names every broker a process writes to: a process that cannot reach one is not
ready, whatever the others say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ott.catalog import REFERENCE_CATALOG
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.ports import free_port

pytestmark = pytest.mark.timeout(120)


def test_notification_dispatch_is_not_ready_while_rabbitmq_is_unreachable(
    brokers: Brokers, database: str, tmp_path: Path
) -> None:
    # notification-dispatch said ready with RabbitMQ's port closed: only Kafka was asked.
    service = "notification-dispatch"
    port, closed = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIDE_")},
        **brokers.as_env(),
        "TIDE_CATALOG_FILE": str(REFERENCE_CATALOG),
        "TIDE_POSTGRES_DSN": database,
        "TIDE_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{closed}/",
        "TIDE_HTTP_PORT": str(port),
    }
    log = tmp_path / f"{service}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tide", "run", service],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    answers: list[httpx.Response] = []

    def answered() -> bool:
        try:
            answers.append(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5))
        except httpx.TransportError:
            return False
        return True

    try:
        wait_until(answered, timeout=60, what=f"{service} answering /readyz")
    finally:
        process.terminate()
        process.wait(timeout=60)
    ready = answers[-1]
    assert ready.status_code == 503, ready.text
    assert f"RabbitMQ unreachable at 127.0.0.1:{closed}/" in ready.json()["detail"]
