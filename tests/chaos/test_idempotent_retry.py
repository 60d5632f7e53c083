"""A 503 does not mean "not written" (#16): with the broker frozen, the API gives up on an
event whose produce is in doubt; the client retries with its Idempotency-Key once the
broker is back (or with the event id it chose itself), and the event has one effect however
many copies Kafka holds."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer
from fastapi.testclient import TestClient

from ott.video_service import create_app
from tests.conftest import unique
from tests.integration.test_consumer_runner import effects, fast_retries, recording
from tests.runtime_fixtures import RunningGroup
from tide.codecs.json_schema import EventCodec
from tide.handlers import Handler
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev import Brokers
from tide_dev.kafka import KafkaBroker

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("identity", ["Idempotency-Key", "event id"])
def test_a_retry_after_a_503_in_doubt_has_one_effect(
    identity: str,
    brokers: Brokers,
    catalog: Catalog,
    own_kafka: KafkaBroker,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
    consumer: Callable[..., Consumer],
) -> None:
    group = fast_retries(catalog)  # reads the topic of video.rated
    handler, _ = recording()
    run_group(group, handler)
    publisher = EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=3
    )
    rating: dict[str, object] = {
        "type": "video.rated",
        "data": {"user_id": unique("u"), "video_id": "v1", "rating": 5},
    }
    headers = {"content-type": "application/json"}
    if identity == "event id":
        rating["id"] = unique("evt")  # the client's own event id, sent again on the retry
    else:
        headers["idempotency-key"] = unique("retry")
    with TestClient(create_app(catalog, publisher, max_body_bytes=4096)) as api:
        own_kafka.freeze()
        try:
            doubtful = api.post("/v1/events", content=json.dumps(rating), headers=headers)
        finally:
            own_kafka.thaw()
        assert doubtful.status_code == 503, doubtful.text
        # Kafka may have the event: the answer must not say it was refused.
        assert doubtful.json()["error"] == "outcome unknown", doubtful.text
        assert "may or may not have been written" in doubtful.json()["detail"]
        assert "same Idempotency-Key, or the same event id, is safe" in doubtful.text
        assert doubtful.headers["retry-after"] == "1"
        retried = api.post("/v1/events", content=json.dumps(rating), headers=headers)
        assert retried.status_code == 202, retried.text
    event_id = retried.json()["id"]
    wait_until(lambda: event_id in effects(database, group.name), timeout=90, what="the effect")
    reader = consumer(unique("copies"))
    reader.subscribe([str(catalog.event("video.rated").topic)])
    copies = _copies(reader, event_id)
    assert copies >= 1
    assert effects(database, group.name)[event_id] == 1, f"{copies} copies in Kafka, one effect"
    print(f"\nidempotent retry: {copies} cop(ies) of {event_id} in Kafka, one effect")


def _copies(reader: Consumer, event_id: str) -> int:
    """Records carrying `event_id`: wait for the first, then read until a poll finds none."""
    found = [0]

    def poll() -> int:
        messages = reader.consume(100, timeout=1)
        for message in messages:
            headers = dict(message.headers() or [])
            if message.error() is None and headers.get("ce_id") == event_id.encode():
                found[0] += 1
        return len(messages)

    wait_until(lambda: poll() >= 0 and found[0] > 0, timeout=60, what=f"{event_id} in Kafka")
    while poll():
        pass
    return found[0]
