"""Every runner's exit status is its drain verdict (#15 deliverable 6): SIGTERM, then exit 0
once what it had in hand is finished. The APIs used to die of the SIGTERM uvicorn raises
again after its shutdown (-15), so only a log line told a drain from a kill."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tide_dev import Brokers
from tide_dev.chaos.processes import LocalPlatform

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("service", ["video-service", "subscription"])
def test_an_api_exits_0_once_it_has_drained(
    brokers: Brokers, database: str, tmp_path: Path, service: str
) -> None:
    assert database  # the subscription API needs the event store's schema applied
    with LocalPlatform(brokers.as_env(), tmp_path) as platform:
        process = platform.start(service)
        process.popen.send_signal(signal.SIGTERM)
        code = process.popen.wait(timeout=60)
        log = process.log.read_text(errors="replace")
        assert code == 0, f"{service} exited {code} on SIGTERM:\n{log[-1500:]}"
        assert f"{service} stopped cleanly" in log, log[-1500:]
