"""A schema registry outage under a running consumer group (#15 deliverable 6): the record in
registry format waits in place, tried again and again, and none reaches the DLQ.

The old consumer dead-lettered it at once as `undecodable`. No registry installs on this
machine: the outage is an address nothing listens on (a registry that is down, met
with a cold cache), and it is never brought back.
"""

from __future__ import annotations

import json
import logging
import struct

import pytest
from confluent_kafka import Producer

from tests.integration.test_consumer_runner import fast_retries, rating, recording
from tests.runtime_fixtures import running_runner
from tide.codecs.json_schema import EventCodec
from tide.dlq import DeadLetterQueue
from tide.kafka.producer import EventPublisher
from tide.status import backlogs
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.ports import free_port

pytestmark = pytest.mark.timeout(180)


def test_a_registry_outage_under_a_running_group_dead_letters_nothing(
    brokers: Brokers,
    catalog: Catalog,
    database: str,
    publisher: EventPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="tide.kafka.processing")
    client = {"bootstrap.servers": brokers.kafka_bootstrap}
    group = fast_retries(catalog)
    handler, attempts = recording()
    event = rating("registry-outage")
    with running_runner(
        catalog,
        group,
        handler,
        codec=EventCodec(catalog, f"http://127.0.0.1:{free_port()}"),
        database=database,
        publisher=publisher,
        client=client,
    ):
        producer = Producer(client)
        producer.produce(
            str(catalog.event("video.rated").topic),
            key=b"registry-outage",
            # The Confluent wire format: magic byte 0, a schema id, then the JSON.
            value=b"\x00" + struct.pack(">I", 7) + json.dumps(dict(event.data)).encode(),
            headers=event.kafka_headers(dataschema=""),
        )
        assert producer.flush(30) == 0

        def waits() -> int:
            return sum("schema registry unavailable" in r.getMessage() for r in caplog.records)

        # Tried in place again and again (every 2 s), never routed on.
        wait_until(lambda: waits() >= 3, timeout=90, what="three attempts at the record")
        assert DeadLetterQueue(client, group).depth() == 0, "the record was dead-lettered"
        assert backlogs(client, [group])[group.name] >= 1, "the record was committed past"
        assert attempts[event.id] == 0, "the handler ran on a record it could not decode"
