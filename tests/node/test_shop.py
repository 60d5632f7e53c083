"""`pulumi up` of a team's own program puts the team's platform on the real node.

examples/orders is a team's platform on Tide: its own catalog, package, image and Pulumi
program around TidePlatform. The real Pulumi engine runs that program from the shop's
own project files (`Pulumi.yaml`, `Pulumi.kind.yaml`), on Tide's venv, onto the cluster
of the real node. The shop's pods run from the shop's image, built FROM Tide's as the
README tells a team, and reach their own brokers through the Services, Secrets and
SCRAM users the component rendered for them (served by the harness, as for Tide's own
stack: tests/harness/served_brokers.py). Then `pulumi destroy` takes it all away again,
before Tide's kind stack takes the node (test_stack.py).

The one change to the shop's stack file: `tide:schemaRegistry: none`, as for Tide's stack
on this node (Apicurio's image cannot be had here).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from infra import kind
from infra.config import Versions
from infra.local_stack import LocalStack
from kubernetes import client

from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import local_stack, stack_kubeconfig
from tests.harness.addresses import NODE_LINK_HOST
from tests.harness.crds import crd_documents
from tests.harness.diagnostics import describe_pods
from tests.harness.played_operators import PlayedOperators
from tests.harness.served_brokers import ServedBrokers
from tests.node.conftest import (
    SHOP,
    SHOP_IMAGE,
    NodeCluster,
    migrated_tables,
    post_from_pod,
    services_on_the_node,
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
APPS, DATA = f"{PREFIX}-apps", f"{PREFIX}-data"
CATALOG = load_catalog(SHOP / "catalog.yaml")


@dataclass(frozen=True)
class Shop:
    stack: LocalStack
    core: client.CoreV1Api
    brokers: ServedBrokers
    outputs: dict[str, Any]

    def pods(self) -> list[dict[str, Any]]:
        """The shop's pods: its services' and its Jobs'."""
        return [p.to_dict() for p in self.core.list_namespaced_pod(APPS).items]

    def post_order(self, pod: str, order: dict[str, Any], *, key: str | None) -> int:
        """An order posted to the shop's API through its Service, from a pod on the node."""
        service = CATALOG.service("orders-api")
        url = f"http://{service.name}.{APPS}.svc:{service.http_port}/orders"
        headers = {API_KEY_HEADER: key} if key else {}
        status, _posted = post_from_pod(self.core, pod, url, order, headers)
        return status


@pytest.fixture(scope="module")
def shop(stack_node: NodeCluster) -> Iterator[Shop]:
    """The shop's kind stack put up by its own program, as its team runs `pulumi up`."""
    workdir, cluster = stack_node.workdir, stack_node.cluster
    core = client.CoreV1Api(stack_node.api)
    brokers = ServedBrokers(workdir / "shop-brokers", core, address=NODE_LINK_HOST, data=DATA)
    played = PlayedOperators(cluster.kubeconfig, brokers.played())
    kubeconfig = stack_kubeconfig(cluster, workdir / "kubeconfig-shop")
    stack = local_stack("kind", workdir, kubeconfig, home="shop-stack", source=SHOP, **{
        "tide:namespacePrefix": PREFIX,
        "tide:schemaRegistry": "none",
    })  # fmt: skip
    try:
        ApiServer(cluster.kubeconfig).install(crd_documents(Versions()))
        brokers.start()
        played.start()
        try:
            shown = kind.pulumi_up(stack)
        except Exception as exc:
            raise AssertionError(
                f"{exc}\nprovisioning retried: {played.retrying}\n{describe_pods(core, APPS)}"
            ) from exc
        yield Shop(stack, core, brokers, shown)
    finally:
        # Whatever a failed test left: Tide's stack comes onto this node next.
        stack.run("destroy", "--stack", "kind", "--yes", "--skip-preview", check=False,
                  capture=True, timeout=900)  # fmt: skip
        played.stop()
        brokers.stop()


def test_the_shops_services_run_from_its_image_on_the_real_node(shop: Shop) -> None:
    """Every service of the shop's catalog is Ready on the real node, from the shop's
    image, and the migrate Job made the shop's own table from the SQL in its package."""
    pods = shop.pods()
    services = services_on_the_node(pods, CATALOG, SHOP_IMAGE)
    tables = migrated_tables(pods, shop.brokers.postgres.dsn)
    assert "invoice_ledger" in tables, tables
    report(NODE_REPORT, f"the shop's own program, pulumi up on the real node: {len(services)} "
                        f"pods of {SHOP_IMAGE} Ready, the shop's table migrated")  # fmt: skip


def test_an_order_is_invoiced_shipped_and_a_poison_one_dead_lettered(shop: Shop) -> None:
    """From pods on the node, through the API's Service: a stranger is refused; with the
    stack's key (its apiKeys output) a paid order is invoiced once in billing's ledger, an
    order in a currency billing refuses lands in billing's DLQ, and the courier, behind
    RabbitMQ, picks up both parcels."""
    (key,) = shop.outputs["apiKeys"].values()
    paid = {"order_id": "o-node", "customer_id": "c-1", "total_cents": 1250, "currency": "EUR"}
    unbillable = {**paid, "order_id": "o-node-x", "currency": "XYZ"}
    assert shop.post_order("order-stranger", paid, key=None) == 401
    assert shop.post_order("order-paid", paid, key=key) == 202
    assert shop.post_order("order-unbillable", unbillable, key=key) == 202
    dsn = shop.brokers.postgres.dsn

    def ledger() -> list[tuple[Any, ...]]:
        with psycopg.connect(dsn) as conn:
            query = "SELECT order_id, amount_cents FROM invoice_ledger ORDER BY order_id"
            return conn.execute(query).fetchall()

    wait_until(lambda: bool(ledger()), timeout=120, interval=0.5, what="the order invoiced")
    dlq = DeadLetterQueue({"bootstrap.servers": shop.brokers.kafka.bootstrap},
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
    shop.stack.run("destroy", "--stack", "kind", "--yes", "--skip-preview", capture=True,
                   timeout=900)  # fmt: skip
    names = client.CoreV1Api(shop.core.api_client)

    def left() -> list[str]:
        return [n.metadata.name for n in names.list_namespace().items
                if n.metadata.name.startswith(f"{PREFIX}-")]  # fmt: skip

    wait_until(lambda: not left(), timeout=180, interval=1, what="the shop's namespaces gone")
    images = {c.image for p in shop.core.list_pod_for_all_namespaces().items
              for c in p.spec.containers}  # fmt: skip
    assert not any(image.endswith(SHOP_IMAGE) for image in images), images
