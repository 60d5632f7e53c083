"""The player's HTTP API: accepts watch events and answers 202 once Kafka has them.

No consumer is on the request path. Bad input is a 4xx that names the problem:
400 malformed JSON (a key given twice too) or nesting too deep, 408 a body that stalls,
413 oversized body, 415 not JSON, 422 unknown type or schema-invalid data (tide.bodies).
A 503 says whether the event was sent: not at all (Kafka known unreachable, the registry
down), or sent without Kafka's confirmation in time (outcome unknown); each carries
Retry-After and says that a retry with the same Idempotency-Key or event id is safe.
An accepted event is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tide.auth import OPEN, Caller, Guard
from tide.bodies import BodyRefusedError, read_json
from tide.errors import PlatformUnavailableError
from tide.events.envelope import CloudEvent
from tide.events.schemas import schema
from tide.handlers import AppContext
from tide.health import add_health_routes, problems, unavailable
from tide.idempotency import CLIENT_ID, IdempotencyKeyError, Replays, header_scope
from tide.idempotency import HEADER as IDEMPOTENCY_HEADER
from tide.kafka.producer import EventPublisher, NotSentError, PublishError
from tide.topology import Catalog

log = logging.getLogger(__name__)
# The scope a caller needs to send events (tide.auth).
WRITE = "events:write"
# Every 503 says so: the event id is derived from the key and the content (or is the
# client's own), so a second copy in Kafka has no second effect.
_SAFE_RETRY = (
    "Retrying with the same Idempotency-Key, or the same event id, is safe: the event"
    " takes effect once"
)


class EventIn(BaseModel):
    """A player event: its type and its data (the schema of that type)."""

    type: str = Field(
        examples=["video.watch.started"],
        max_length=100,
        description="the event type, one the catalog lets players send",
    )
    data: dict[str, Any] = Field(description="the event's data, valid under its type's schema")
    # ASCII only, like every id: it travels in AMQP headers, whose strings hold 255 bytes
    # (100 four-byte characters passed, then notification-dispatch failed on every try).
    correlation_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description=(
            "ties this event to others of one flow; every event it causes carries it"
            " (default: the event's own id)"
        ),
    )
    # The client's own event id: a retry with it has one effect (tide.idempotency).
    id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description=(
            "the client's own id, made the event's id: a retry with it has one effect,"
            " and reusing it for other content is refused (422)"
        ),
    )


class Accepted(BaseModel):
    id: str = Field(description="the event's id: the client's own, or one the API chose")
    type: str = Field(description="the event type")
    topic: str = Field(description="the Kafka topic the event was written to")
    partition: int = Field(description="its partition")
    offset: int = Field(description="its offset there")


_PLAYBACK = {"user_id": "u-42", "video_id": "v-dune", "session_id": "s-7f3a"}
# An example request's data per type a player sends, shown in the OpenAPI document (and
# checked against it). Which types are accepted is the catalog's: those on its topics.
EXAMPLES: dict[str, dict[str, Any]] = {
    "video.watch.started": {**_PLAYBACK, "device": "tv", "position_s": 0},
    "video.heartbeat": {**_PLAYBACK, "position_s": 620.5, "quality": "1080p"},
    "video.quality.changed": {**_PLAYBACK, "quality": "720p"},
    "video.watch.completed": {**_PLAYBACK, "watched_s": 7200, "finished": True},
    "video.rated": {"user_id": "u-42", "video_id": "v-dune", "rating": 5},
}


def accepted_types(catalog: Catalog, service: str) -> tuple[str, ...]:
    """The event types `service` may be sent: every type on the topics it produces to."""
    produces = set(catalog.service(service).produces)
    return tuple(dict.fromkeys(e.type for e in catalog.events if e.topic in produces))


def request_schema(catalog: Catalog, accepted: tuple[str, ...]) -> dict[str, Any]:
    """The body, one variant per accepted type with that type's own data schema: what the
    endpoint enforces, so clients and generated requests (schemathesis) see every bound."""
    envelope = EventIn.model_json_schema()
    variants = []
    for name in accepted:
        data = {k: v for k, v in schema(catalog.event(name)).items() if k != "$schema"}
        type_ = {"const": name, "description": envelope["properties"]["type"]["description"]}
        properties = {**envelope["properties"], "type": type_, "data": data}
        variants.append({**envelope, "title": data["title"], "properties": properties})
    return {"oneOf": variants}


def app(context: AppContext) -> FastAPI:
    """The catalog's factory for this API (`tide run video-service`)."""
    return create_app(
        context.catalog,
        context.publisher,
        max_body_bytes=context.settings.max_body_bytes,
        service=context.service.name,
        guard=context.settings.guard(),
    )


def create_app(
    catalog: Catalog,
    publisher: EventPublisher,
    *,
    max_body_bytes: int,
    service: str = "video-service",
    guard: Guard = OPEN,
) -> FastAPI:
    """The API around one shared publisher (closed with the app); `guard` says who may
    send events (scope `events:write`)."""
    replays = Replays()
    accepted_here = accepted_types(catalog, service)
    source = catalog.service(service).source

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        undelivered = publisher.close()
        # Each undelivered event was answered 503 (or never answered): not a clean drain.
        app.state.drained = undelivered == 0
        log.info("%s drained (%d undelivered)", service, undelivered)

    app = FastAPI(title="Tide video-service", version="1", lifespan=lifespan)
    guard.install(app)
    may_send = guard.requires(WRITE)

    @app.post(
        "/v1/events",
        status_code=202,
        # The body is parsed by hand (to answer 400 for malformed JSON, 422 for the
        # rest); declare it so clients and schemathesis see its shape.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": request_schema(catalog, accepted_here),
                        "examples": {
                            name: {"value": {"type": name, "data": EXAMPLES[name]}}
                            for name in accepted_here
                            if name in EXAMPLES
                        },
                    }
                },
            },
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "a retry with the same key and content has one effect",
                    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                }
            ],
        },
        response_model=Accepted,
        responses=problems(400, *guard.problems(), 408, 413, 415, 422, 503),
    )
    async def accept(  # noqa: PLR0911 - one answer per refusal
        request: Request, caller: Caller = may_send
    ) -> Response:
        # The body is read here rather than in a middleware: Starlette's
        # BaseHTTPMiddleware cost about a third of the endpoint's throughput (bench/).
        try:
            payload = await read_json(request, max_body_bytes)
        except BodyRefusedError as refused:
            return _problem(refused.status, refused.error, refused.detail)
        try:
            incoming = EventIn.model_validate(payload)
        except ValueError as exc:
            return _problem(422, "invalid request", str(exc).splitlines()[0] + ": " + _first(exc))
        if incoming.type not in accepted_here:
            return _problem(
                422,
                "unknown event type",
                f"{incoming.type!r}; accepted: {', '.join(accepted_here)}",
            )
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and incoming.id is not None:
            return _problem(
                422, "idempotency key", "give an Idempotency-Key header or an id, not both"
            )
        identity: dict[str, str] = {}
        scope = None  # a client's own event id: one memory for every caller
        if incoming.id is not None:
            key, name = CLIENT_ID + incoming.id, "id"
        elif key is not None:
            name, scope = "Idempotency-Key", header_scope(caller.id)
        if key is not None:
            fingerprint = replays.fingerprint(payload)
            try:
                first = replays.first_answer(
                    replays.checked(key), fingerprint, name=name, scope=scope
                )
            except IdempotencyKeyError as exc:
                return _problem(exc.status, "idempotency key", str(exc))
            if first is not None:
                return JSONResponse(first, status_code=202, headers={"idempotent-replayed": "true"})
            identity["id"] = incoming.id or replays.event_id(key, fingerprint, caller=caller.id)
        event = CloudEvent(
            type=incoming.type,
            source=source,
            data=incoming.data,
            **identity,
            **({"correlationid": incoming.correlation_id} if incoming.correlation_id else {}),
            **caller.context(),
        )
        # The codec's refusals (schema-invalid data) are answered 422 by the shared handler
        # (tide.health.add_health_routes), as for any team's API.
        try:
            delivery = await publisher.publish_async(event)
        except PlatformUnavailableError as exc:  # Kafka, or the schema registry
            return _unavailable(exc)
        accepted = Accepted(
            id=event.id,
            type=event.type,
            topic=delivery.topic,
            partition=delivery.partition,
            offset=delivery.offset,
        ).model_dump()
        if key is not None:
            replays.remember(key, fingerprint, accepted, scope=scope)
        return JSONResponse(accepted, status_code=202)

    add_health_routes(app, publisher.unready_reason)

    return app


def _unavailable(exc: PlatformUnavailableError) -> JSONResponse:
    """503, saying whether the event was sent: a publish Kafka did not confirm may have
    been written, the rest (Kafka known unreachable, the registry down) never left."""
    if isinstance(exc, PublishError) and not isinstance(exc, NotSentError):
        log.error("event in doubt: %s", exc)
        return unavailable(
            "outcome unknown",
            f"Kafka did not confirm the event in time ({exc}): it may or may not have been"
            f" written. {_SAFE_RETRY}",
        )
    log.error("event not accepted: %s", exc)
    return unavailable("event not accepted", f"{exc}; it was not sent. {_SAFE_RETRY}")


def _first(exc: ValueError) -> str:
    lines = str(exc).splitlines()
    return " ".join(line.strip() for line in lines[1:3])


def _problem(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)
