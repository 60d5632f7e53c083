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
import threading

import pytest
from confluent_kafka import Producer

from tests.harness import Brokers
from tests.harness.process import free_port
from tests.integration.test_consumer_runner import fast_retries, rating, recording
from tide.codecs.json_schema import EventCodec
from tide.dlq import DeadLetterQueue
from tide.kafka.consumer import ConsumerRunner
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import EventPublisher
from tide.kafka.topics import ensure_topics
from tide.status import backlogs
from tide.topology import Catalog
from tide.waiting import wait_until

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
    ensure_topics(client, catalog.side_topics(group))
    handler, attempts = recording()
    processor = RecordProcessor(
        group=group,
        handler=handler,
        codec=EventCodec(catalog, f"http://127.0.0.1:{free_port()}"),
        database=database,
        publisher=publisher,
        source="/test",
    )
    runner = ConsumerRunner(group, processor, client)
    thread = threading.Thread(target=runner.run, name="registry-outage", daemon=True)
    thread.start()
    event = rating("registry-outage")
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

    try:
        # Tried in place again and again (every 2 s), never routed on.
        wait_until(lambda: waits() >= 3, timeout=90, what="three attempts at the record")
        assert DeadLetterQueue(client, group).depth() == 0, "the record was dead-lettered"
        assert backlogs(client, [group])[group.name] >= 1, "the record was committed past"
        assert attempts[event.id] == 0, "the handler ran on a record it could not decode"
    finally:
        runner.stop()
        thread.join(timeout=30)
        processor.close()
    assert not thread.is_alive()
