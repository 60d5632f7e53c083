"""Asks the couriers for a parcel for each order placed (through RabbitMQ)."""

from __future__ import annotations

from collections.abc import Iterable

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext


def handle(event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
    data = {"order_id": event.data["order_id"], "customer_id": event.data["customer_id"]}
    return (event.caused("parcel.requested", ctx.source, data),)
