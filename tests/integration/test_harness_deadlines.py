"""A broker that does not come up within its deadline is stopped and reported with its log."""

from __future__ import annotations

import shutil

import pytest

from tide_dev import HarnessError
from tide_dev.brokers import broker_dir
from tide_dev.postgres import PostgresServer
from tide_dev.process import port_is_open


def test_broker_missing_its_deadline_is_stopped_and_reported() -> None:
    root = broker_dir()
    server = PostgresServer(root / "pg")
    with pytest.raises(HarnessError) as caught:
        server.start(timeout=0.0)
    shutil.rmtree(root)
    text = str(caught.value)
    assert text.startswith("PostgreSQL: PostgreSQL accepting connections")
    assert "did not happen within 0s" in text
    assert f"last lines of {server.log}" in text
    assert "TIDE_POSTGRES_DSN" in text
    assert not port_is_open(server.port), "the half-started server must not be left running"
