"""`make bench`: Tide's hot paths against bare clients and peers, measured side by side.

    make bench                                   # quick mode, under ten minutes
    make bench BENCH_ARGS="--full"               # longer runs, more rounds
    make bench BENCH_ARGS="--write"              # also rewrite bench/results.md and the chart
    make bench BENCH_ARGS="--only produce,e2e"   # some of them (--write: results-produce-e2e.md)

Brokers come from the test harness (or the TIDE_* variables `make brokers` prints).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

from bench import report
from bench.measure import FULL, QUICK, Row, Section
from bench.setting import setting
from tide import heap

# name -> module with `measure(setting, mode) -> list[Row | Section]`
BENCHMARKS = {
    "produce": "bench.produce",
    "consume": "bench.consume",
    "api": "bench.api",
    "event-store": "bench.event_store",
    "rabbitmq": "bench.rabbitmq",
    "e2e": "bench.e2e",
}

NOTES = Path(__file__).parent / "notes.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="longer runs and 7 rounds")
    parser.add_argument(
        "--write",
        action="store_true",
        help="rewrite bench/results.md and chart (with --only: bench/results-<names>.md)",
    )
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    mode = FULL if args.full else QUICK
    chosen = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    # The collector settings every Tide service runs with (tide.heap), for ours and the
    # baselines alike: both run in this process.
    heap.settle()
    results: list[Row | Section] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tide-bench-") as work, setting(Path(work)) as where:
        for name in chosen:
            print(f"bench: {name} ({mode.name})...", file=sys.stderr, flush=True)
            results += import_module(BENCHMARKS[name]).measure(where, mode)
    rows = [r for r in results if isinstance(r, Row)]
    sections = [r for r in results if isinstance(r, Section)]
    command = "make bench" + (f' BENCH_ARGS="{_args(args)}"' if _args(args) else "")
    print(report.table(rows))
    for section in sections:
        print(report.section(section))
    print(report.targets(rows, sections))
    took = time.monotonic() - started
    print(f"bench: {len(rows)} rows, {len(sections)} sections in {took:.0f}s", file=sys.stderr)
    if args.write:
        text = report.document(rows, sections, mode, command, NOTES.read_text())
        if args.only:  # a part of the run: its own page, beside the whole run's
            part = report.RESULTS.with_name(f"results-{'-'.join(chosen)}.md")
            part.write_text(text)
            print(f"bench: wrote {part}", file=sys.stderr)
        else:
            report.RESULTS.write_text(text)
            report.chart(rows)
            print(f"bench: wrote {report.RESULTS} and {report.CHART}", file=sys.stderr)
    return 0


def _args(args: argparse.Namespace) -> str:
    parts = ["--full"] if args.full else []
    if args.only:
        parts.append(f"--only {args.only}")
    if args.write:
        parts.append("--write")
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
