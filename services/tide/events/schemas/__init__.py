"""The JSON Schema of each catalog event type and version, shipped as data beside this file."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from tide.topology import EventType


@cache
def schema_text(event: EventType) -> str:
    """The schema file's text, as registered in the schema registry."""
    path = resources.files(__name__) / event.schema_file
    if not path.is_file():
        raise LookupError(
            f"event {event.type!r} v{event.version} has no schema file {event.schema_file}"
        )
    return path.read_text(encoding="utf-8")


def schema(event: EventType) -> dict[str, Any]:
    """The parsed JSON Schema of an event type."""
    parsed: dict[str, Any] = json.loads(schema_text(event))
    return parsed
