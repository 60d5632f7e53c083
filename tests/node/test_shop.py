"""`pulumi up` of a team's own program puts the team's platform on the real node.

examples/orders is a team's platform on Tide: its own catalog, package, image and Pulumi
program around TidePlatform. The real Pulumi engine runs that program from the shop's
own project files (`Pulumi.yaml`, `Pulumi.kind.yaml`), on Tide's venv, onto the cluster
of the real node, as Tide's own stack is run (`stack_on_the_node`: operators external,
namespaces `shop-*`, no schema registry). The shop's pods run from the shop's image,
built FROM Tide's by its Dockerfile, and reach their own brokers through the Services,
Secrets and SCRAM users the component rendered for them. Then `pulumi destroy` takes it
all away again, before Tide's kind stack takes the node (test_stack.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from infra import outputs

from tests.node.conftest import (
    SHOP,
    SHOP_IMAGE,
    NodeCluster,
    NodeStack,
    migrated_tables,
    post_from_pod,
    services_on_the_node,
    stack_on_the_node,
)
from tests.reports import NODE as NODE_REPORT
from tests.reports import report
from tide.auth import API_KEY_HEADER
from tide.catalog_file import load_catalog
from tide.dlq import DeadLetterQueue
from tide.store.processed import count_processed
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(1200)
PREFIX = "shop"
APPS = f"{PREFIX}-apps"
CATALOG = load_catalog(SHOP / "catalog.yaml")


@dataclass(frozen=True)
class Shop:
    up: NodeStack

    @property
    def dsn(self) -> str:
        return self.up.brokers.postgres.dsn

    def pods(self) -> list[dict[str, Any]]:
        """The shop's pods: its services' and its Jobs'."""
        return [p.to_dict() for p in self.up.core.list_namespaced_pod(APPS).items]

    def post_order(self, pod: str, order: dict[str, Any], *, key: str | None) -> int:
        """An order posted to the shop's API through its Service, from a pod on the node."""
        service = CATALOG.service("orders-api")
        url = f"http://{service.name}.{APPS}.svc:{service.http_port}/orders"
        headers = {API_KEY_HEADER: key} if key else {}
        status, _posted = post_from_pod(self.up.core, pod, url, order, headers)
        return status

    def destroy(self, *, check: bool = True) -> None:
        self.up.stack.run("destroy", "--stack", "kind", "--yes", "--skip-preview", check=check,
                          capture=True, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def shop(shared_node: NodeCluster) -> Iterator[Shop]:
    """The shop's kind stack put up by its own program, as its team runs `pulumi up`."""
    with stack_on_the_node(shared_node, PREFIX, home="shop", source=SHOP) as up:
        shop = Shop(up)
        try:
            yield shop
        finally:
            # What a failed test left (after the destroy test, nothing): Tide's stack comes
            # onto this node next, and must not meet the shop's NodePorts.
            shop.destroy(check=False)


def test_the_shops_services_run_from_its_image_on_the_real_node(shop: Shop) -> None:
    """Every service of the shop's catalog is Ready on the real node, from the shop's
    image, and the migrate Job made the shop's own table from the SQL in its package."""
    pods = shop.pods()
    services = services_on_the_node(pods, CATALOG, SHOP_IMAGE)
    tables = migrated_tables(pods, shop.dsn)
    assert "invoice_ledger" in tables, tables
    report(NODE_REPORT, f"the shop's own program, pulumi up on the real node: {len(services)} "
                        f"pods of {SHOP_IMAGE} Ready, the shop's table migrated")  # fmt: skip


def test_an_order_is_invoiced_shipped_and_a_poison_one_dead_lettered(shop: Shop) -> None:
    """From pods on the node, through the API's Service: a stranger is refused; with the
    stack's key (its apiKeys output) a paid order is invoiced once in billing's ledger, an
    order in a currency billing refuses lands in billing's DLQ, and the courier, behind
    RabbitMQ, picks up both parcels."""
    (key,) = shop.up.outputs[outputs.API_KEYS].values()
    paid = {"order_id": "o-node", "customer_id": "c-1", "total_cents": 1250, "currency": "EUR"}
    unbillable = {**paid, "order_id": "o-node-x", "currency": "XYZ"}
    assert shop.post_order("order-stranger", paid, key=None) == 401
    assert shop.post_order("order-paid", paid, key=key) == 202
    assert shop.post_order("order-unbillable", unbillable, key=key) == 202
    dsn = shop.dsn

    def ledger() -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn) as conn:
            query = "SELECT order_id, amount_cents FROM invoice_ledger ORDER BY order_id"
            return conn.execute(query).fetchall()

    wait_until(lambda: bool(ledger()), timeout=120, interval=0.5, what="the order invoiced")
    dlq = DeadLetterQueue({"bootstrap.servers": shop.up.brokers.kafka.bootstrap},
                          CATALOG.group("billing"))  # fmt: skip
    wait_until(lambda: dlq.depth() == 1, timeout=120, interval=1, what="billing's DLQ")
    (dead,) = dlq.show()
    assert (dead.key, dead.reason) == (b"o-node-x", "permanent"), dead
    (worker,) = CATALOG.queue_workers

    def picked_up() -> int:
        with psycopg.connect(dsn) as conn:
            return count_processed(conn, worker.queue)

    wait_until(lambda: picked_up() == 2, timeout=120, interval=0.5, what="two parcels")
    assert ledger() == [("o-node", 1250)]


def test_pulumi_destroy_takes_the_shop_off_the_node(shop: Shop) -> None:
    """`pulumi destroy` leaves no namespace of the shop's and no pod of its image."""
    shop.destroy()
    core = shop.up.core

    def left() -> list[str]:
        return [n.metadata.name for n in core.list_namespace().items
                if n.metadata.name.startswith(f"{PREFIX}-")]  # fmt: skip

    wait_until(lambda: not left(), timeout=180, interval=1, what="the shop's namespaces gone")
    images = {c.image for p in core.list_pod_for_all_namespaces().items
              for c in p.spec.containers}  # fmt: skip
    assert not any(image.endswith(SHOP_IMAGE) for image in images), images
