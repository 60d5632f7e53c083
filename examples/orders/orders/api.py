"""The orders API: `POST /orders` answers 202 once Kafka has the order.

Tide serves it (`tide run orders-api`) and hands it an AppContext: the publisher that
validates each event against its schema and writes it to the catalog's topic, and the
settings, whose guard checks each caller's token or API key (TIDE_AUTH_*).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from tide.auth import Caller
from tide.events.envelope import CloudEvent
from tide.handlers import AppContext
from tide.health import add_health_routes, problems

_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


class OrderIn(BaseModel):
    order_id: str = Field(pattern=_ID, description="the client's id for the order")
    customer_id: str = Field(pattern=_ID)
    total_cents: int = Field(ge=0, le=100_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])


class Placed(BaseModel):
    id: str = Field(description="the order.placed event's id")
    partition: int
    offset: int


def app(context: AppContext) -> FastAPI:
    publisher = context.publisher

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        yield
        # Tide exits 0 only when every accepted order reached Kafka.
        api.state.drained = publisher.close() == 0

    api = FastAPI(title="orders", lifespan=lifespan)
    # Who may place orders: the stack's mode (a token or key with `orders:write`).
    guard = context.settings.guard()
    guard.install(api)
    may_place = guard.requires("orders:write")

    @api.post("/orders", status_code=202, responses=problems(*guard.problems(), 422, 503))
    async def place(order: OrderIn, caller: Caller = may_place) -> Placed:
        # The event id is the order's: a client that retries places it once.
        event = CloudEvent(
            type="order.placed",
            source=context.service.source,
            data=order.model_dump(),
            id=f"order-{order.order_id}",
            **caller.context(),  # who placed it, for every consumer to see
        )
        delivery = await publisher.publish_async(event)
        return Placed(id=event.id, partition=delivery.partition, offset=delivery.offset)

    # /healthz, /readyz (Kafka reachable), /metrics; a broker that is down answers 503.
    add_health_routes(api, publisher.unready_reason)
    return api
