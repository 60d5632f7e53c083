"""The JSON Schema of each catalog event type and version: the reference platform's are data
beside this file; a catalog names the package that holds its own."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from tide.topology import EventType


@cache
def schema_text(event: EventType) -> str:
    """The schema file's text, as registered in the schema registry."""
    where = f"event {event.type!r} v{event.version}"
    if not event.schemas:
        raise LookupError(f"{where} names no schemas package (a catalog's `schemas`)")
    try:
        path = resources.files(event.schemas) / event.schema_file
    except ModuleNotFoundError:
        raise LookupError(f"{where}: schemas package {event.schemas!r} is not installed") from None
    if not path.is_file():
        raise LookupError(f"{where} has no schema file {event.schema_file} in {event.schemas}")
    return path.read_text(encoding="utf-8")


def schema(event: EventType) -> dict[str, Any]:
    """The parsed JSON Schema of an event type."""
    parsed: dict[str, Any] = json.loads(schema_text(event))
    return parsed
