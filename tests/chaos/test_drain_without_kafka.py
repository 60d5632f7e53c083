"""A consumer told to stop stops, even when Kafka crashed first. Its shutdown path used to
commit synchronously, and after a crash (not a clean broker shutdown, which hands the
group over) both that commit and librdkafka's own close() wait for a coordinator for
ever: five processes were still running five minutes after SIGTERM."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.integration.test_consumer_runner import fast_retries
from tests.runtime_fixtures import create_topics
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.handlers import HandlerContext
from tide.kafka.consumer import DRAIN_BOUND_S, ConsumerRunner
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev.kafka import KafkaBroker

pytestmark = pytest.mark.timeout(300)


def test_a_stop_ends_within_the_drain_bound_after_kafka_crashed(
    catalog: Catalog, database: str, tmp_path: Path
) -> None:
    kafka = KafkaBroker(tmp_path / "kafka")  # its own broker: this test crashes it
    kafka.start()
    try:
        group = fast_retries(catalog)
        create_topics(kafka.bootstrap, [*catalog.all_topics(), *catalog.side_topics(group)])
        client = {"bootstrap.servers": kafka.bootstrap}
        codec = EventCodec(catalog)
        handled = threading.Event()
        kafka_gone = threading.Event()

        def handle(event: CloudEvent, ctx: HandlerContext) -> None:
            # The record is done only once Kafka is gone, so its offset is stored but not
            # yet committed: what a stop under load meets.
            handled.set()
            kafka_gone.wait(timeout=120)

        publisher = EventPublisher(client, codec, timeout_s=5)
        processor = RecordProcessor(
            group=group,
            handler=handle,
            codec=codec,
            database=database,
            publisher=publisher,
            source="/test",
        )
        runner = ConsumerRunner(group, processor, client, timeout_s=5)
        thread = threading.Thread(target=runner.run, name="group-under-test", daemon=True)
        thread.start()
        publisher.publish(
            CloudEvent(
                type="video.rated",
                source="/test",
                data={"user_id": "u1", "video_id": "v1", "rating": 5},
            )
        )
        wait_until(handled.is_set, timeout=90, what="the record in the handler")
        kafka.kill()  # a crash: a clean shutdown hands the group over and close() returns
        kafka_gone.set()
        asked = time.monotonic()
        runner.stop()  # what SIGTERM calls
        thread.join(timeout=DRAIN_BOUND_S + 30)
        took = time.monotonic() - asked
        assert not thread.is_alive(), f"still draining {took:.0f} s after the stop"
        assert took <= DRAIN_BOUND_S, f"the stop took {took:.0f} s, bound {DRAIN_BOUND_S} s"
        processor.close()
        publisher.close()
        # An abandoned close() (most runs) still waits for a coordinator; give it one, so
        # that it ends here rather than reconnecting for the rest of the session.
        kafka.start()
    finally:
        kafka.stop()
