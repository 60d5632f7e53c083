"""A team's own platform, not the reference one, runs on Tide from its own files.

examples/orders is what a team writes: a catalog file, an app factory, handlers, event
schemas and SQL migrations in its own package. Tide's CLI, given only that catalog file,
creates its topics (with the retry topics and DLQs it derives), its RabbitMQ topology and
its tables, and runs every service; an order then flows from the team's API through Kafka and
RabbitMQ to the team's worker, and a poison order lands in the team's own DLQ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import unique
from tide.auth import API_KEY_HEADER, api_keys_json, new_api_key
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.settings import Settings
from tide.store.processed import count_processed
from tide.waiting import wait_until
from tide_dev import Brokers, BrokerSession
from tide_dev.ports import free_port

pytestmark = pytest.mark.timeout(240)

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders"


def _tide(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tide", "--catalog", str(EXAMPLE / "catalog.yaml"), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_teams_own_platform_runs_from_its_catalog_file(
    brokers: Brokers,
    database: str,
    broker_session: BrokerSession,
    consumer: Callable[..., Consumer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # this test reads the shop's events too
    suffix = unique("shop")
    key, entry = new_api_key("shop-front", ["orders:write"])
    credentials = {API_KEY_HEADER: key}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIDE_")},
        **brokers.as_env(),
        "TIDE_POSTGRES_DSN": database,
        "TIDE_CATALOG_SUFFIX": suffix,
        # The team's API takes only its clients' keys, through Tide's guard.
        "TIDE_AUTH_MODE": "api-keys",
        "TIDE_AUTH_API_KEYS": api_keys_json([entry]),
        # The team's package: installed in their image; here, on the path.
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), *filter(None, [os.getenv("PYTHONPATH")])]),
    }
    _tide(env, "topics", "create")
    # The shop's own table, from the SQL files its catalog names, after Tide's schema.
    migrated = _tide(env, "db", "migrate")
    assert "orders.migrations/0001_invoice_ledger.sql" in migrated or "up to date" in migrated
    assert broker_session.rabbitmq is not None
    broker_session.rabbitmq.import_definitions(json.loads(_tide(env, "rabbitmq", "definitions")))
    catalog = Settings(catalog_file=str(EXAMPLE / "catalog.yaml"), catalog_suffix=suffix).catalog()
    names = [s.name for s in catalog.services]
    base = free_port(len(names))
    api = f"http://127.0.0.1:{base + names.index('orders-api')}"
    log = tmp_path / "run-all.log"
    with log.open("wb") as out:
        platform = subprocess.Popen(
            [sys.executable, "-m", "tide_dev.cli", "--catalog", str(EXAMPLE / "catalog.yaml"),
             "run"],
            env={**env, "TIDE_HTTP_PORT": str(base)},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    alive = lambda: None if platform.poll() is None else f"exited {platform.returncode}"  # noqa: E731
    try:
        wait_until(lambda: _ready(api), timeout=120, what="orders-api ready", alive=alive)
        paid = {"order_id": suffix, "customer_id": "c-1", "total_cents": 1250, "currency": "EUR"}
        unbillable = {**paid, "order_id": f"{suffix}-x", "currency": "XYZ"}
        stranger = httpx.post(f"{api}/orders", json=paid, timeout=30)
        assert stranger.status_code == 401, stranger.text
        for order in (paid, unbillable):
            answer = httpx.post(f"{api}/orders", json=order, headers=credentials, timeout=30)
            assert answer.status_code == 202, answer.text
        refused = httpx.post(
            f"{api}/orders", json={**paid, "total_cents": -1}, headers=credentials, timeout=30
        )
        assert refused.status_code == 422, refused.text
        # Tide times each of the team's answers, though its route returns a model.
        assert _answers(api) == {"202": 2, "401": 1, "422": 1}

        codec = EventCodec(catalog)
        invoices = _events(consumer, codec, str(catalog.event("invoice.issued").topic))
        dead = _events(consumer, codec, catalog.group(f"billing-{suffix}").dlq_topic)
        wait_until(lambda: bool(invoices()), timeout=60, what="an invoice issued", alive=alive)
        wait_until(lambda: bool(dead()), timeout=60, what="the poison order dead-lettered")
        # Once, though the unbillable order may have failed the batch the paid one was in.
        (invoice,) = invoices()
        assert invoice.type == "invoice.issued"
        assert invoice.data == {"order_id": suffix, "customer_id": "c-1", "amount": "12.50 EUR"}
        (poison,) = dead()
        assert poison.data["order_id"] == f"{suffix}-x"
        # Billing's own ledger: one numbered line for the paid order, none for the poison.
        with psycopg.connect(database) as conn:
            lines = conn.execute(
                "SELECT order_id, amount_cents, invoice_number > 0 FROM invoice_ledger"
                " WHERE order_id LIKE %s",
                (f"{suffix}%",),
            ).fetchall()
        assert lines == [(suffix, 1250, True)]
        # Both orders ship: the courier, behind RabbitMQ, picks up two parcels exactly once.
        queue = catalog.queue_workers[0].queue
        wait_until(
            lambda: _processed(database, queue) == 2, timeout=60, what="two parcels picked up"
        )
    finally:
        platform.send_signal(signal.SIGTERM)
        code = platform.wait(timeout=120)
    assert code == 0, log.read_text()[-3000:]


def _answers(url: str) -> dict[str, int]:
    """The API's answers so far by status (tide_api_request_duration_seconds), from its own
    /metrics: locally it serves them on its HTTP port."""
    scraped = httpx.get(f"{url}/metrics", timeout=10).text
    (family,) = (
        f
        for f in text_string_to_metric_families(scraped)
        if f.name == "tide_api_request_duration_seconds"
    )
    return {
        s.labels["status"]: int(s.value)
        for s in family.samples
        if s.name.endswith("_count") and s.value
    }


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _events(
    consumer: Callable[..., Consumer], codec: EventCodec, topic: str
) -> Callable[[], list[CloudEvent]]:
    """Everything on `topic` so far, decoded; each call reads what arrived since."""
    reader = consumer(unique("read"))
    reader.subscribe([topic])
    seen: list[CloudEvent] = []

    def read() -> list[CloudEvent]:
        for record in reader.consume(num_messages=100, timeout=1):
            assert record.error() is None, record.error()
            seen.append(codec.decode(topic, record.value(), record.headers()))
        return seen

    return read


def _processed(dsn: str, consumer: str) -> int:
    with psycopg.connect(dsn) as db:
        return count_processed(db, consumer)
