"""Picks up a parcel. Tide records the job as done in the same transaction, once."""

from __future__ import annotations

import logging

from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext

log = logging.getLogger(__name__)


def handle(event: CloudEvent, ctx: HandlerContext) -> None:
    log.info("parcel of order %s picked up", event.data["order_id"])
