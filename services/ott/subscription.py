"""Subscriptions as an event-sourced aggregate behind HTTP commands.

State is rebuilt from a snapshot plus the events after it; a snapshot is taken
every SNAPSHOT_EVERY versions. Payments reach `payment-events` only through
the outbox, in the same transaction as the events that record them. A command
racing another on the same subscription gets 409 and may simply be retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import psycopg
from fastapi import FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ott.catalog import CATALOG
from tide.auth import OPEN, Caller, Guard
from tide.bodies import BodyRefusedError, read_json
from tide.errors import pg_conninfo
from tide.events.envelope import CloudEvent
from tide.events.schemas import schema
from tide.handlers import AppContext
from tide.health import add_health_routes, problems
from tide.kafka.producer import EventPublisher
from tide.liveness import Heartbeat, Liveness, supervised
from tide.store.event_store import ConcurrencyError, EventStore, RecordedEvent, Snapshot
from tide.store.outbox import OutboxRelay
from tide.store.projections import Projection, ProjectionRunner

log = logging.getLogger(__name__)
SOURCE = "/subscription"
SNAPSHOT_EVERY = 5
# The scopes a caller needs (tide.auth): commands change a subscription, reads do not.
WRITE = "subscriptions:write"
READ = "subscriptions:read"
PRICES = {"basic": 599, "standard": 999, "premium": 1599}
Plan = Literal["basic", "standard", "premium"]


class CommandRejectedError(ValueError):
    """The command makes no sense for the subscription's current state."""


@dataclass(frozen=True)
class Subscription:
    """The aggregate's state, folded from its events."""

    # The API answers with this state: its attribute docstrings describe it in OpenAPI.
    __pydantic_config__ = ConfigDict(use_attribute_docstrings=True)

    id: str
    """the subscription's id"""
    version: int = 0
    """how many events it has had: the version of its event stream"""
    status: Literal["none", "active", "cancelled"] = "none"
    """none before it starts, then active until it is cancelled"""
    user_id: str = ""
    """the user it belongs to"""
    plan: str = ""
    """the plan it was started on"""
    payments: int = 0
    """payments captured: one at the start and one at every renewal"""

    def apply(self, event_type: str, data: Mapping[str, Any], version: int) -> Subscription:
        if event_type == "subscription.started":
            return replace(
                self, status="active", user_id=data["user_id"], plan=data["plan"], version=version
            )
        if event_type == "payment.captured":
            return replace(self, payments=self.payments + 1, version=version)
        if event_type == "subscription.cancelled":
            return replace(self, status="cancelled", version=version)
        return replace(self, version=version)

    # Commands: decide which events happen, or refuse.
    def start(self, user_id: str, plan: str) -> list[CloudEvent]:
        if self.status != "none":
            raise CommandRejectedError(f"subscription {self.id!r} already exists ({self.status})")
        started = _event(
            "subscription.started", {"subscription_id": self.id, "user_id": user_id, "plan": plan}
        )
        return [started, _payment(self.id, user_id, plan)]

    def renew(self) -> list[CloudEvent]:
        if self.status != "active":
            raise CommandRejectedError(f"subscription {self.id!r} is {self.status}, not active")
        return [_payment(self.id, self.user_id, self.plan)]

    def cancel(self) -> list[CloudEvent]:
        if self.status != "active":
            raise CommandRejectedError(f"subscription {self.id!r} is {self.status}, not active")
        return [_event("subscription.cancelled", {"subscription_id": self.id})]


def _event(type_: str, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent(type=type_, source=SOURCE, data=data, subject=str(data["subscription_id"]))


def _payment(subscription_id: str, user_id: str, plan: str) -> CloudEvent:
    return _event(
        "payment.captured",
        {
            "subscription_id": subscription_id,
            "user_id": user_id,
            "plan": plan,
            "amount_cents": PRICES[plan],
            "currency": "EUR",
        },
    )


class SubscriptionRepository:
    """Loads and saves the aggregate through the event store, with snapshots."""

    def __init__(self, store: EventStore, snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self.store = store
        self.snapshot_every = snapshot_every

    async def load(self, conn: psycopg.AsyncConnection[Any], subscription_id: str) -> Subscription:
        state = Subscription(subscription_id)
        snapshot = await self.store.load_snapshot(conn, subscription_id)
        if snapshot is not None:
            state = Subscription(**snapshot.state)
        for recorded in await self.store.read_stream(conn, subscription_id, state.version):
            state = state.apply(recorded.event.type, recorded.event.data, recorded.version)
        return state

    async def save(
        self, conn: psycopg.AsyncConnection[Any], state: Subscription, events: list[CloudEvent]
    ) -> Subscription:
        payments = [e for e in events if e.type == "payment.captured"]
        version = await self.store.append_to_stream(
            conn, state.id, events, expected_version=state.version, publish=payments
        )
        new = state
        for offset, event in enumerate(events, start=1):
            new = new.apply(event.type, event.data, state.version + offset)
        if version // self.snapshot_every > state.version // self.snapshot_every:
            await self.store.save_snapshot(conn, Snapshot(state.id, version, vars(new)))
        return new


async def _apply_overview(conn: psycopg.AsyncConnection[Any], recorded: RecordedEvent) -> None:
    event, data = recorded.event, recorded.event.data
    if event.type == "subscription.started":
        await conn.execute(
            "INSERT INTO subscription_overview (subscription_id, user_id, plan, status)"
            " VALUES (%s, %s, %s, 'active') ON CONFLICT (subscription_id) DO NOTHING",
            (data["subscription_id"], data["user_id"], data["plan"]),
        )
    elif event.type == "payment.captured":
        await conn.execute(
            "UPDATE subscription_overview SET payments = payments + 1,"
            " paid_cents = paid_cents + %s WHERE subscription_id = %s",
            (data["amount_cents"], data["subscription_id"]),
        )
    elif event.type == "subscription.cancelled":
        await conn.execute(
            "UPDATE subscription_overview SET status = 'cancelled' WHERE subscription_id = %s",
            (data["subscription_id"],),
        )


async def _reset_overview(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("DELETE FROM subscription_overview")


# Per process; PostgreSQL's default max_connections (100) is shared by every service.
POOL_SIZE = 10
POOL_WAIT_S = 5.0
POOL_QUEUE = 200

OVERVIEW = Projection("subscription_overview", _apply_overview, _reset_overview)


def _bounds(field_name: str) -> dict[str, Any]:
    """Length and pattern of a field of `payment.captured`, where every id here ends up:
    an id the API accepts is one the outbox can always publish."""
    spec = schema(CATALOG.event("payment.captured"))["properties"][field_name]
    # pydantic matches with Rust's regex, whose `$` is the end of the text: no trailing newline.
    return {
        "min_length": spec["minLength"],
        "max_length": spec["maxLength"],
        "pattern": spec["pattern"],
    }


SubscriptionId = Annotated[str, Path(**_bounds("subscription_id"))]
# What a command decides from a subscription's state, and the route step that runs one.
Decision = Callable[[Subscription], list[CloudEvent]]
Command = Callable[[str, Decision, Caller], Awaitable[Response]]
UserId = Annotated[str, Field(**_bounds("user_id"))]


MAX_BODY_BYTES = 4096  # a start command is a user id and a plan


class StartIn(BaseModel):
    user_id: UserId = Field(description="the user the subscription is for")
    plan: Plan = Field(description="the plan, which sets the price of each payment")


def app(context: AppContext) -> FastAPI:
    """The catalog's factory for this API (`tide run subscription`)."""
    return create_app(
        context.settings.postgres_dsn.get_secret_value(),
        context.publisher,
        guard=context.settings.guard(),
    )


def create_app(
    dsn: str, publisher: EventPublisher, *, relay: bool = True, guard: Guard = OPEN
) -> FastAPI:
    """The API; `guard` says who may run commands (scope subscriptions:write) and who may
    read (subscriptions:read)."""
    store = EventStore(dsn)
    repository = SubscriptionRepository(store)
    projection = ProjectionRunner(store, OVERVIEW)
    liveness = Liveness()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests share a bounded pool (one per lifespan, so in the loop that serves them).
        app.state.pool = pool = _request_pool(dsn)
        await pool.open(wait=False)  # PostgreSQL may be down at start: requests get 503
        stop = asyncio.Event()
        projecting = liveness.heartbeat("projection subscription_overview")
        tasks = [
            asyncio.create_task(
                supervised(
                    projecting, lambda: _keep_projecting(projection, store, stop, projecting), stop
                )
            )
        ]
        if relay:
            relaying = liveness.heartbeat("outbox relay")
            outbox = OutboxRelay(dsn, publisher)
            tasks.append(
                asyncio.create_task(
                    supervised(relaying, lambda: outbox.run(stop, heartbeat=relaying), stop)
                )
            )
        yield
        stop.set()
        await asyncio.gather(*tasks)
        await pool.close()
        app.state.drained = publisher.close() == 0
        log.info("subscription drained")

    app = FastAPI(title="Tide subscription", version="1", lifespan=lifespan)
    guard.install(app)
    refusals = guard.problems()
    may_write, may_read = guard.requires(WRITE), guard.requires(READ)

    async def command(
        subscription_id: str, decide: Any, caller: Caller, *, others: int = 404
    ) -> Response:
        async with app.state.pool.connection() as conn:
            state = await repository.load(conn, subscription_id)
            if state.status != "none" and not caller.acts_for(state.user_id):
                return _someone_elses(subscription_id, others)
            try:
                # Each event records who asked for it (the authcontext extension).
                events = [dataclasses.replace(e, **caller.context()) for e in decide(state)]
                new = await repository.save(conn, state, events)
            except CommandRejectedError as exc:
                return JSONResponse({"error": "rejected", "detail": str(exc)}, status_code=409)
            except ConcurrencyError as exc:
                return JSONResponse({"error": "conflict", "detail": str(exc)}, status_code=409)
        return JSONResponse(vars(new), status_code=200)

    @app.post(
        "/v1/subscriptions/{subscription_id}/start",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": StartIn.model_json_schema(),
                        "example": {"user_id": "u-42", "plan": "standard"},
                    }
                },
            }
        },
        response_model=Subscription,
        responses=problems(400, *refusals, 408, 409, 413, 415, 422, 503),
    )
    async def start(
        subscription_id: SubscriptionId,
        request: Request,
        caller: Caller = may_write,
    ) -> Response:
        # Read by hand, as the player API does: JSON only, bounded while it streams, a
        # key given twice refused (tide.bodies).
        try:
            body = StartIn.model_validate(await read_json(request, MAX_BODY_BYTES))
        except BodyRefusedError as refused:
            return JSONResponse(
                {"error": refused.error, "detail": refused.detail}, status_code=refused.status
            )
        except ValidationError as exc:
            # Answered by the shared handler (tide.health), which names the field.
            errors = exc.errors(include_input=False)
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in errors]
            ) from None
        if not caller.acts_for(body.user_id):
            return _for_itself_only(caller)
        return await command(
            subscription_id, lambda s: s.start(body.user_id, body.plan), caller, others=409
        )

    # Commands with no body: each route named for its action, and so its operation id, as
    # a route function of that name would be.
    for action, decide in (("renew", Subscription.renew), ("cancel", Subscription.cancel)):
        app.add_api_route(
            f"/v1/subscriptions/{{subscription_id}}/{action}",
            _bodiless(command, decide, may_write),
            methods=["POST"],
            name=action,
            response_model=Subscription,
            responses=problems(*refusals, 404, 409, 422, 503),
        )

    @app.get(
        "/v1/subscriptions/{subscription_id}",
        response_model=Subscription,
        responses=problems(*refusals, 404, 422, 503),
    )
    async def read(subscription_id: SubscriptionId, caller: Caller = may_read) -> Response:
        async with app.state.pool.connection() as conn:
            state = await repository.load(conn, subscription_id)
        if state.status == "none" or not caller.acts_for(state.user_id):
            return _not_found(subscription_id)
        return JSONResponse(vars(state))

    add_health_routes(app, lambda: _unready(dsn, publisher), liveness.problem)

    return app


def _bodiless(command: Command, decide: Decision, may_write: Any) -> Callable[..., Any]:
    """A route that runs `decide` on the subscription its path names, as the caller."""

    async def run(subscription_id: SubscriptionId, caller: Caller = may_write) -> Response:
        return await command(subscription_id, decide, caller)

    return run


def _not_found(subscription_id: str) -> Response:
    return JSONResponse({"error": "not found", "detail": subscription_id}, status_code=404)


def _for_itself_only(caller: Caller) -> Response:
    detail = f"user {caller.id!r} may start a subscription for itself only"
    return JSONResponse({"error": "forbidden", "detail": detail}, status_code=403)


def _someone_elses(subscription_id: str, status: int) -> Response:
    """The answer to a command on another user's subscription: to a renew or cancel (404)
    it does not exist; a start (409) learns only that the id is taken."""
    if status == 404:
        return _not_found(subscription_id)
    detail = f"subscription {subscription_id!r} already exists"
    return JSONResponse({"error": "rejected", "detail": detail}, status_code=409)


def _unready(dsn: str, publisher: EventPublisher) -> str | None:
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL unreachable: {exc}"
    return publisher.unready_reason()


def _request_pool(dsn: str) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """One connection per request ran PostgreSQL out of connections ("too many clients
    already", answered 500) under 300 concurrent reads. A request waits at most
    POOL_WAIT_S for one of POOL_SIZE, and at most POOL_QUEUE wait at all; beyond either
    it is shed with 503 (psycopg_pool's errors are OperationalErrors)."""
    return AsyncConnectionPool(
        pg_conninfo(dsn),
        min_size=1,
        max_size=POOL_SIZE,
        kwargs={
            "autocommit": True,
            "application_name": "tide-subscription-api",  # pg_stat_activity tells them apart
        },
        timeout=POOL_WAIT_S,
        max_waiting=POOL_QUEUE,
        open=False,
    )


async def _keep_projecting(
    projection: ProjectionRunner, store: EventStore, stop: asyncio.Event, heartbeat: Heartbeat
) -> None:
    while not stop.is_set():
        heartbeat.beat()
        try:
            conn = await store.connect()
            async with conn:
                while not stop.is_set():
                    heartbeat.beat()
                    await projection.catch_up(conn)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
        except psycopg.OperationalError as exc:
            log.warning("projection paused: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2)
