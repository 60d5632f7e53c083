"""`tide-dev chaos <experiment>` as an operator runs it: its own platform processes, the brokers
stopped through the control URL that `make brokers` serves, the report on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.rabbitmq.definitions import definitions
from tide_dev import Brokers, BrokerSession
from tide_dev.control import HarnessControl, serve

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def control_url(broker_session: BrokerSession) -> Iterator[str]:
    server, url = serve(HarnessControl(broker_session))
    yield url
    server.shutdown()
    server.server_close()


def test_tide_chaos_restart_kafka_prints_a_report_that_held(
    brokers: Brokers, broker_session: BrokerSession, database: str, control_url: str
) -> None:
    suffix = unique("cc")
    node = broker_session.own_rabbitmq("the catalog is loaded into the harness's node")
    node.import_definitions(definitions(CATALOG.isolated(suffix)))
    env = {
        **os.environ,
        **brokers.as_env(),
        "TIDE_CATALOG_SUFFIX": suffix,
        "TIDE_CHAOS_CONTROL_URL": control_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tide_dev.cli", "chaos", "restart-kafka", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["experiment"] == "restart-kafka"
    assert report["verdict"] == "held", report["violations"]
    assert report["actions"][0].startswith("stopped the Kafka broker under load")
    observed = report["observed"]
    assert observed["accepted"] > 0
    assert observed["accepted"] <= observed["in_kafka"] == observed["profiles"]
    assert observed["profiles"] == observed["completions"] == observed["notifications"]
