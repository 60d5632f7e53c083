"""Logs as JSON lines carrying the correlation id of the event being handled."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "correlation", default=None
)


class correlation:  # noqa: N801 - used as a function: `with correlation(id):`
    """Every log line inside carries this correlation id. A class, not a generator-based
    context manager: it wraps every record a consumer handles (bench/)."""

    __slots__ = ("_id", "_token")

    def __init__(self, correlation_id: str | None) -> None:
        self._id = correlation_id

    def __enter__(self) -> None:
        self._token = _correlation.set(self._id)

    def __exit__(self, *_exc: object) -> None:
        _correlation.reset(self._token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (cid := _correlation.get()) is not None:
            line["correlation_id"] = cid
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # One line per HTTP request (readiness probes, chaos load) would drown our own logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
