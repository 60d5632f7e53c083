"""Invoices each order placed, in billing's own ledger; an order in a currency it cannot
bill goes to its DLQ."""

from __future__ import annotations

from collections.abc import Iterable

from tide.errors import PermanentError
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext

CURRENCIES = frozenset({"EUR", "USD"})


def handle(event: CloudEvent, ctx: HandlerContext) -> Iterable[CloudEvent]:
    order = event.data
    if order["currency"] not in CURRENCIES:
        # No retry can fix it: straight to billing.dlq, for a person to look at.
        raise PermanentError(f"cannot bill in {order['currency']}")
    # In the transaction that marks the order processed: one ledger line per order, even
    # when the record is delivered again.
    ctx.db.execute(
        "INSERT INTO invoice_ledger (order_id, customer_id, amount_cents, currency)"
        " VALUES (%s, %s, %s, %s)",
        (order["order_id"], order["customer_id"], order["total_cents"], order["currency"]),
    )
    amount = f"{order['total_cents'] // 100}.{order['total_cents'] % 100:02d} {order['currency']}"
    data = {"order_id": order["order_id"], "customer_id": order["customer_id"], "amount": amount}
    return (event.caused("invoice.issued", ctx.source, data),)
