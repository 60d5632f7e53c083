"""Produce: Tide's publish path against a bare confluent-kafka producer doing the same work
with the same settings (idempotent, acks=all, lz4, linger 5 ms), and against FastStream's
publisher on both of its Kafka backends. Kafka's Java ProducerPerformance for reference.

Tide's path is what every service runs: envelope, schema validation, CloudEvents headers, one
future per event completed from the delivery report. The bare producer does, per event and
inside the timed loop, what Tide's path must do minus Tide (bench/same_work.py): the same
JSON value (orjson of the event's data), the same key, the same CloudEvents headers, and a
delivery callback; it runs no schema check. Every path sends all events before it waits.
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Callable, Sequence

import orjson
from confluent_kafka import KafkaError, Message, Producer

from bench import peers, reference
from bench.measure import Mode, Rounds, Row, interleaved, timed
from bench.payloads import RECOMMENDATION, recommendation
from bench.same_work import Headers
from bench.setting import Setting
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher, producer_config
from tide_dev.maven import runtime_classpath

TARGET = 0.7
TARGET_PEER = 1.0  # Tide against FastStream's faster backend
OURS = "publish: envelope, schema check, headers, future per event"


def bare(
    bootstrap: str, topic: str, key: str, headers: Headers, events: Sequence[CloudEvent]
) -> Callable[[], None]:
    """A confluent-kafka producer on producer_config: per event the data serialized with
    orjson, the key and Tide's CloudEvents headers built, produce with a delivery callback
    (retrying on a full queue); then flush, and no delivery may have failed."""

    def run() -> None:
        producer = Producer(producer_config({"bootstrap.servers": bootstrap}, 30))
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error)

        for event in events:
            value = orjson.dumps(dict(event.data))
            record_key = str(event.data[key]).encode()
            record_headers = headers.binary(event)
            while True:
                try:
                    producer.produce(
                        topic, value, record_key, headers=record_headers, on_delivery=delivered
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        assert producer.flush(60) == 0
        assert not failures, failures[:1]

    return run


def tide(bootstrap: str, codec: EventCodec, events: list[CloudEvent]) -> Callable[[], None]:
    """EventPublisher.send for every event (each a future), then every future's result."""

    def run() -> None:
        publisher = EventPublisher({"bootstrap.servers": bootstrap}, codec, timeout_s=30)
        pending = [publisher.send(event) for event in events]
        for future in pending:
            future.result(timeout=60)
        assert publisher.close() == 0

    return run


def java_rate(bootstrap: str, topic: str, records: int, size: int) -> float:
    """ProducerPerformance's records/s with the same producer settings."""
    command = [
        *("java", "-cp", runtime_classpath("kafka"), "org.apache.kafka.tools.ProducerPerformance"),
        *("--topic", topic, "--num-records", str(records), "--record-size", str(size)),
        *("--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}"),
        *("acks=all", "enable.idempotence=true", "compression.type=lz4", "linger.ms=5"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    return float(re.findall(r"([\d.]+) records/sec", out)[-1])


def _rows(case: str, rounds: Rounds, java: float) -> list[Row]:
    """Tide against the bare producer, and against FastStream's faster backend."""
    by_backend = {b: rounds.spread(f"faststream-{b}").median for b in peers.BACKENDS}
    faster = max(by_backend, key=by_backend.__getitem__)
    slower = next(b for b in peers.BACKENDS if b != faster)
    ours, baseline = rounds.spread("tide").median, rounds.spread("bare").median
    return [
        Row(
            path="produce",
            case=case,
            ours=OURS,
            baseline="bare confluent-kafka producer, same settings, same work: per event "
            "orjson of the data, the key and Tide's CloudEvents headers built, a delivery "
            "callback (no schema check)",
            ratio=rounds.ratio("tide", "bare"),
            target=TARGET,
            ours_rate=ours,
            baseline_rate=baseline,
            extra=reference.java(
                "ProducerPerformance", java, (ours, baseline, *by_backend.values())
            ),
        ),
        Row(
            path="produce",
            case=f"{case}, vs FastStream",
            ours=OURS,
            baseline=f"{peers.FASTSTREAM} publish, {faster} (the faster backend this run): "
            f"{peers.PRODUCER}; the data (serialized by FastStream), key and Tide's "
            "CloudEvents headers per event; every publish queued (no_confirm=True), then "
            "every delivery awaited (no schema check)",
            ratio=rounds.ratio("tide", f"faststream-{faster}"),
            target=TARGET_PEER,
            ours_rate=ours,
            baseline_rate=by_backend[faster],
            extra=f"FastStream on {slower} {by_backend[slower]:,.0f}/s; Tide / it "
            f"{rounds.ratio('tide', f'faststream-{slower}').text()}",
        ),
    ]


def measure(setting: Setting, mode: Mode) -> list[Row]:
    records = 20_000 * mode.scale
    event_type = setting.catalog.event(RECOMMENDATION)
    topic, key = str(event_type.topic), event_type.key
    rows = []
    for size in (200, 1024):
        events = [recommendation(size, n) for n in range(records)]
        headers = Headers.kafka(setting.codec, events[0])
        mean = int(statistics.mean(len(setting.codec.encode(e).value) for e in events))
        publishers = {
            f"faststream-{b}": timed(
                records,
                peers.publisher(
                    setting.bootstrap, topic, events, key=key, headers=headers, backend=b
                ),
            )
            for b in peers.BACKENDS
        }
        rounds = interleaved(
            {
                "bare": timed(records, bare(setting.bootstrap, topic, key, headers, events)),
                "tide": timed(records, tide(setting.bootstrap, setting.codec, events)),
                **publishers,
            },
            mode,
        )
        # Run last and alone: the JVM would otherwise compete with the rounds for the CPU.
        java = java_rate(setting.bootstrap, topic, records * 2, mean)
        rows += _rows(f"{mean} B", rounds, java)
    return rows
