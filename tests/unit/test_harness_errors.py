"""The harness fails with one clear error: what failed, why, and the command that fixes it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tide_dev import HarnessError
from tide_dev.kafka import KafkaBroker
from tide_dev.maven import runtime_classpath
from tide_dev.process import require


def test_missing_executable_names_the_debian_package_to_install() -> None:
    with pytest.raises(HarnessError) as caught:
        require("tide-no-such-tool", search=["/nonexistent"])
    assert "tide-no-such-tool: not installed" in str(caught.value)
    assert "apt-get install -y tide-no-such-tool" in str(caught.value)


def test_missing_maven_is_reported_with_the_package_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TIDE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(HarnessError) as caught:
        runtime_classpath("kafka")
    assert "mvn: not installed" in str(caught.value)
    assert "apt-get install -y maven" in str(caught.value)


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(HarnessError) as caught:
            KafkaBroker(tmp_path, port=port).start()
    assert f"port {port} on 127.0.0.1 is already in use" in str(caught.value)
    assert "ss -ltnp" in str(caught.value)
    assert not (tmp_path / "data").exists(), "nothing should have been formatted"


def test_error_shows_the_tail_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    error = HarnessError("Kafka", reason="exited with code 1", fix="do X", log=log)
    text = str(error)
    assert text.startswith("Kafka: exited with code 1")
    assert "line 99" in text
    assert "line 50" not in text
    assert text.endswith("fix: do X")
