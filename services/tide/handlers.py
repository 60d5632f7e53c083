"""The contract between runners and business handlers, which know nothing of transports."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import psycopg

from tide.events.envelope import CloudEvent


@dataclass(frozen=True)
class HandlerContext:
    """What a handler may use: the transaction its effects belong to, and who it runs as."""

    db: psycopg.Connection[Any]
    consumer: str
    source: str


# A handler takes one event and returns the events it caused (or nothing). Its
# database effects go through ctx.db and commit only together with the record
# of this event being processed, so a redelivery has no second effect.
Handler = Callable[[CloudEvent, HandlerContext], Iterable[CloudEvent] | None]


def load_handler(path: str) -> Handler:
    """Import 'package.module:function' (the catalog's spelling of a handler)."""
    module_name, _, attribute = path.partition(":")
    handler: Handler = getattr(import_module(module_name), attribute)
    return handler
