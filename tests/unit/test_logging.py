"""Logs are JSON lines that carry the correlation id of the event being handled."""

from __future__ import annotations

import json
import logging

from tide.observability import JsonFormatter, correlation


def test_json_log_line_carries_the_correlation_id() -> None:
    record = logging.LogRecord(
        "tide.test", logging.WARNING, __file__, 1, "handled %s", ("e1",), None
    )
    with correlation("corr-42"):
        line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "handled e1"
    assert line["level"] == "warning"
    assert line["correlation_id"] == "corr-42"
    outside = json.loads(JsonFormatter().format(record))
    assert "correlation_id" not in outside
