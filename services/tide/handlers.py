"""The contract between the runners and a platform's own code: the handlers, which know
nothing of transports, and the API services' app factories. The catalog names each as
'package.module:function', so that code lives in the platform's own package."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

import psycopg

from tide.events.envelope import CloudEvent

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tide.kafka.producer import EventPublisher
    from tide.settings import Settings
    from tide.topology import Catalog, Service


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


@dataclass(frozen=True)
class AppContext:
    """What an API service's app factory is given: the service it runs as, its catalog, the
    publisher it sends events with (closed by the app's lifespan) and the process settings."""

    service: Service
    catalog: Catalog
    publisher: EventPublisher
    settings: Settings


# An API service's catalog `app`: builds the app `tide run` serves. Its lifespan sets
# `app.state.drained` once what it accepted is delivered (tide.launch.serve).
AppFactory = Callable[[AppContext], "FastAPI"]


class NotRunnableError(LookupError):
    """Code the catalog names cannot be imported: the process cannot run (exit 3)."""


def load_handler(path: str) -> Handler:
    """Import 'package.module:function' (the catalog's spelling of a handler)."""
    handler: Handler = _load(path)
    return handler


def load_app(path: str) -> AppFactory:
    """Import an API service's app factory, spelt like a handler."""
    factory: AppFactory = _load(path)
    return factory


def _load(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        # The catalog names it: say which name failed, not only Python's reason.
        raise NotRunnableError(f"cannot load {path!r} named in the catalog: {exc}") from exc
