"""Stopping and starting the brokers an experiment runs against.

The local harness offers this in-process to the test suite, and over HTTP on
loopback to `tide-dev chaos` while `make brokers` runs (TIDE_CHAOS_CONTROL_URL).
On a cluster, the e2e suite deletes pods instead.
"""

from __future__ import annotations

from typing import Literal, Protocol

import httpx

# Where `make brokers` serves stop and start of its brokers (tide_dev.control).
CONTROL_URL_VARIABLE = "TIDE_CHAOS_CONTROL_URL"

Broker = Literal["kafka", "rabbitmq", "postgres"]
Action = Literal["stop", "start", "restart"]


class BrokerControl(Protocol):
    def __call__(self, broker: Broker, action: Action) -> None: ...


class HttpBrokerControl:
    """Asks the process that owns the brokers (`make brokers`) to stop, start or restart one."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __call__(self, broker: Broker, action: Action) -> None:
        response = httpx.post(f"{self.url}/{broker}/{action}", timeout=180)
        if response.status_code != 200:
            raise RuntimeError(
                f"broker control could not {action} {broker}: {response.status_code} "
                f"{response.text.strip()}"
            )
