"""The harness's Kafka is a real broker: records round-trip and each group keeps its own offsets."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.conftest import unique


def _drain(consumer: Consumer, expected: int, deadline_s: float = 30.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        error = message.error()
        assert error is None or error.code() == KafkaError._PARTITION_EOF, error
        if error is None:
            got.append(message)
    return got


def test_two_consumer_groups_each_read_everything_and_commit_their_own_offsets(
    create_topic: Callable[..., str],
    producer: Callable[..., Producer],
    consumer: Callable[..., Consumer],
) -> None:
    topic = create_topic("smoke", partitions=3)
    sender = producer()
    delivered: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for i in range(30):
        sender.produce(topic, key=f"user-{i % 5}", value=f"event-{i}", on_delivery=on_delivery)
    assert sender.flush(30) == 0
    assert len(delivered) == 30

    for group in (unique("analytics"), unique("badges")):
        reader = consumer(group)
        reader.subscribe([topic])
        messages = _drain(reader, 30)
        assert sorted(m.value() for m in messages) == sorted(
            f"event-{i}".encode() for i in range(30)
        )
        # One aggregate, one partition: every key landed on exactly one partition.
        partitions_of_key: dict[bytes, set[int]] = {}
        for m in messages:
            partitions_of_key.setdefault(m.key(), set()).add(m.partition())
        assert all(len(p) == 1 for p in partitions_of_key.values())

        reader.commit(asynchronous=False)
        committed = reader.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        end_offsets = dict.fromkeys(range(3), 0)
        for partition, offset in delivered:
            end_offsets[partition] = max(end_offsets[partition], offset + 1)
        assert {tp.partition: tp.offset for tp in committed} == end_offsets
