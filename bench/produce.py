"""Produce: Tide's publish path against a bare confluent-kafka producer with the same settings
(idempotent, acks=all, lz4, linger 5 ms), Kafka's Java ProducerPerformance as the ceiling.

Tide's path is what every service runs: envelope, schema validation, CloudEvents headers, one
future per event completed from the delivery report. The bare producer sends the same bytes
with no headers and no per-event bookkeeping beyond a delivery callback.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer
from tests.harness.maven import runtime_classpath

from bench.measure import Mode, Row, interleaved, timed
from bench.payloads import RECOMMENDATION, recommendation
from bench.setting import Setting
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher, producer_config

TARGET = 0.7


def bare(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        producer = Producer(producer_config({"bootstrap.servers": bootstrap}, 30))
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error)

        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0
        assert not failures, failures[:1]

    return run


def tide(bootstrap: str, codec: EventCodec, events: list[CloudEvent]) -> Callable[[], None]:
    def run() -> None:
        publisher = EventPublisher({"bootstrap.servers": bootstrap}, codec, timeout_s=30)
        pending = [publisher.send(event) for event in events]
        for future in pending:
            future.result(timeout=60)
        assert publisher.close() == 0

    return run


def java_ceiling(bootstrap: str, topic: str, records: int, size: int) -> float:
    """ProducerPerformance's records/s with the same producer settings."""
    command = [
        *("java", "-cp", runtime_classpath("kafka"), "org.apache.kafka.tools.ProducerPerformance"),
        *("--topic", topic, "--num-records", str(records), "--record-size", str(size)),
        *("--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}"),
        *("acks=all", "enable.idempotence=true", "compression.type=lz4", "linger.ms=5"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    return float(re.findall(r"([\d.]+) records/sec", out)[-1])


def measure(setting: Setting, mode: Mode) -> list[Row]:
    records = 20_000 * mode.scale
    topic = str(setting.catalog.event(RECOMMENDATION).topic)
    rows = []
    for size in (200, 1024):
        events = [recommendation(size, n) for n in range(records)]
        encoded = [setting.codec.encode(e) for e in events]
        values = [e.value for e in encoded]
        mean = int(statistics.mean(len(v) for v in values))
        keys = [e.key for e in encoded]
        rounds = interleaved(
            {
                "tide": timed(records, tide(setting.bootstrap, setting.codec, events)),
                "bare": timed(records, bare(setting.bootstrap, topic, values, keys)),
            },
            mode,
        )
        # Run last and alone: the JVM would otherwise compete with the rounds for the CPU.
        ceiling = java_ceiling(setting.bootstrap, topic, records * 2, mean)
        rows.append(
            Row(
                path="produce",
                case=f"{mean} B",
                ours="publish: envelope, schema check, headers, future per event",
                baseline="bare confluent-kafka producer, same settings",
                ratio=rounds.ratio("tide", "bare"),
                target=TARGET,
                ours_rate=rounds.spread("tide").median,
                baseline_rate=rounds.spread("bare").median,
                extra=f"Java ProducerPerformance {ceiling:,.0f}/s (ceiling)",
            )
        )
    return rows
