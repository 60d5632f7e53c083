"""Produce throughput: Tide's publish path against a bare confluent-kafka producer, same broker,
same settings (idempotent, acks=all, lz4, linger 5 ms), with Kafka's Java ProducerPerformance as the
ceiling. Figures are ratios within one run; absolute rates on a shared machine mean little.

    make bench            # quick: 5 rounds of 20 000 records per size
    make bench BENCH_ARGS="--records 200000 --rounds 7 --write"   # full, rewrites bench/results.md
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from tests.harness.brokers import BrokerSession
from tests.harness.maven import runtime_classpath
from tests.runtime_fixtures import create_topics

from tide.catalog import CATALOG
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher, producer_config

RESULTS = Path(__file__).parent / "results.md"


def _event(size: int, n: int) -> CloudEvent:
    """A `recommendation.generated` event whose JSON payload is about `size` bytes."""
    count = 3 if size < 500 else 20
    length = max(8, min(64, (size - 90) // count - 3))
    return CloudEvent(
        type="recommendation.generated",
        source="/bench",
        data={
            "user_id": f"user-{n % 1000}",
            "video_ids": [f"v{n:06d}-{i:02d}-".ljust(length, "x") for i in range(count)],
            "reason": "because you watched",
        },
    )


def _timed(run: Callable[[], None], records: int) -> float:
    started = time.perf_counter()
    run()
    return records / (time.perf_counter() - started)


def bare(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        producer = Producer(producer_config({"bootstrap.servers": bootstrap}, 30))
        failures: list[object] = []
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    producer.produce(
                        topic, value, key, on_delivery=lambda e, _m: e and failures.append(e)
                    )
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
    command = [
        "java",
        "-cp",
        runtime_classpath("kafka"),
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        "compression.type=lz4",
        "linger.ms=5",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
    match = re.findall(r"([\d.]+) records/sec", out)
    return float(match[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="rewrite bench/results.md")
    args = parser.parse_args()

    session = BrokerSession()
    brokers = session.open()
    try:
        catalog = CATALOG.isolated(f"b{uuid.uuid4().hex[:8]}")
        create_topics(brokers.kafka_bootstrap, list(catalog.topics))
        codec = EventCodec(catalog)
        topic = str(catalog.event("recommendation.generated").topic)
        rows = []
        for size in (200, 1024):
            events = [_event(size, n) for n in range(args.records)]
            encoded = [codec.encode(e) for e in events]
            values = [e.value for e in encoded]
            keys = [e.key for e in encoded]
            mean = statistics.mean(len(v) for v in values)
            paths = {
                "bare": bare(brokers.kafka_bootstrap, topic, values, keys),
                "tide": tide(brokers.kafka_bootstrap, codec, events),
            }
            for run in paths.values():  # warm-up round, not measured
                run()
            rates: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name, run in paths.items():  # interleaved, so drift hits both alike
                    rates[name].append(_timed(run, args.records))
            ratios = [t / b for t, b in zip(rates["tide"], rates["bare"], strict=True)]
            ceiling = java_ceiling(brokers.kafka_bootstrap, topic, args.records, int(mean))
            rows.append(
                {
                    "size": f"{int(mean)} B",
                    "tide": statistics.median(rates["tide"]),
                    "bare": statistics.median(rates["bare"]),
                    "ratio": statistics.median(ratios),
                    "ratio_min": min(ratios),
                    "ratio_max": max(ratios),
                    "java": ceiling,
                }
            )
    finally:
        session.close()
    table = _table(rows, args)
    print(table)
    if args.write:
        RESULTS.write_text(table)
    print(json.dumps(rows), file=sys.stderr)
    return 0


def _table(rows: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Command: `python -m bench.producer --records {args.records} --rounds {args.rounds}`"
        " (`make bench`)",
        f"Machine: {platform.processor() or platform.machine()}, {_cores()} cores, Python "
        f"{platform.python_version()}, Kafka 4.3.1 (single KRaft node on this machine)",
        "",
        "| path | payload | Tide / bare confluent-kafka (median, min-max) | target"
        " | Tide msg/s | bare msg/s | Java ProducerPerformance msg/s (ceiling) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            "| produce (envelope, schema validation, headers, idempotent, acks=all) |"
            f" {row['size']} |"
            f" {row['ratio']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | ≥ 0.70 |"
            f" {row['tide']:,.0f} | {row['bare']:,.0f} | {row['java']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def _cores() -> int:
    import os  # noqa: PLC0415

    return os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
