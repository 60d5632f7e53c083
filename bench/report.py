"""The results: a Markdown table of ratios (printed, and committed as bench/results.md) and a
PNG chart of the same ratios against their targets."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path

from bench.measure import Mode, Row, Section

HERE = Path(__file__).parent
RESULTS = HERE / "results.md"
CHART = HERE / "ratios.png"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    libs = ", ".join(
        f"{name} {version(name)}"
        for name in ("confluent-kafka", "aiokafka", "aio-pika", "psycopg", "fastapi", "uvicorn")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{java.stderr.splitlines()[0] if java.stderr else 'java ?'}; {libs}; "
        f"eventsourcing {version('eventsourcing')}"
    )


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "**missed**"


def markdown(header: Sequence[str], lines: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, its rule, then a row per line of cells."""
    rule = "|" + "---|" * len(header)
    return "\n".join([_row(header), rule, *map(_row, lines)]) + "\n"


def _row(cells: Sequence[object]) -> str:
    return "|" + "".join(f" {cell} |" if cell != "" else " |" for cell in cells)


def table(rows: Sequence[Row]) -> str:
    header = [
        *("path", "case", "ours", "baseline", "ratio ours/baseline: median (min-max)"),
        *("target", "", "ours /s", "baseline /s", "also measured"),
    ]
    return markdown(
        header,
        (
            [
                *(row.path, row.case, row.ours, row.baseline, row.ratio.text()),
                f"{row.direction} {row.target:.2f}" if row.target is not None else "-",
                _verdict(row),
                *(f"{row.ours_rate:,.0f}", f"{row.baseline_rate:,.0f}", row.extra),
            ]
            for row in rows
        ),
    )


def section(part: Section) -> str:
    return f"## {part.title}\n\n{part.markdown.strip()}\n"


def targets(rows: Sequence[Row], sections: Sequence[Section]) -> str:
    """Every target of the run, met or missed, with the run's own figure."""
    lines = ["## Targets in this run", ""]
    for row in rows:
        if row.target is None:
            continue
        lines.append(
            f"- {row.path}, {row.case}: ours/baseline {row.ratio.median:.2f}, target"
            f" {row.direction} {row.target:.2f}: {_verdict(row)}"
        )
    for part in sections:
        for what, met in part.verdicts:
            lines.append(f"- {what}: {'met' if met else '**missed**'}")
    return "\n".join(lines) + "\n"


def document(
    rows: Sequence[Row], sections: Sequence[Section], mode: Mode, command: str, notes: str
) -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Command: `{command}` ({mode.name} mode: warm-up, then {mode.rounds} rounds;"
            " each ratio is taken within a round, ours and the baseline run back to back)",
            "",
            f"Machine: {machine()}. Brokers: the test harness's single-node Kafka (KRaft),"
            " RabbitMQ and PostgreSQL on the same machine.",
            "",
            table(rows),
            f"![ratios]({CHART.name})",
            "",
            *(section(part) for part in sections),
            targets(rows, sections),
            notes.strip(),
            "",
        ]
    )


def chart(rows: Sequence[Row], path: Path = CHART) -> None:
    import matplotlib  # noqa: PLC0415 - only `--write` draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = [f"{r.path} · {r.case}\n{r.ours.split(':')[0]}" for r in rows]
    medians = [r.ratio.median for r in rows]
    low = [r.ratio.median - min(r.ratio.runs) for r in rows]
    high = [max(r.ratio.runs) - r.ratio.median for r in rows]
    colors = ["#999999" if r.met is None else "#2a9d8f" if r.met else "#e76f51" for r in rows]
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.5))
    positions = list(range(len(rows)))[::-1]
    axes.barh(positions, medians, xerr=[low, high], color=colors, capsize=3)
    for y, row in zip(positions, rows, strict=True):
        if row.target is not None:
            axes.plot([row.target, row.target], [y - 0.4, y + 0.4], color="black", linewidth=2)
    axes.set_yticks(positions, labels, fontsize=7)
    axes.axvline(1.0, color="#555555", linestyle=":", linewidth=1)
    axes.set_xlabel("ours / baseline (median, min-max); black tick: target; 1.0 = baseline")
    axes.set_title("Tide against bare clients and peers, one run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
