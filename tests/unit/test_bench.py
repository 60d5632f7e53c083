"""The benchmark's arithmetic and report: ratios are paired within a round, verdicts follow the
targets, and the committed chart is a real PNG."""

from __future__ import annotations

from pathlib import Path

from bench.measure import Mode, Row, Spread, interleaved
from bench.report import chart, table


def test_rounds_alternate_and_ratios_pair_within_each_round() -> None:
    calls: list[str] = []
    rates = {"ours": iter([1.0, 10.0, 20.0, 30.0]), "bare": iter([1.0, 20.0, 20.0, 60.0])}

    def path(name: str) -> float:
        calls.append(name)
        return next(rates[name])

    rounds = interleaved(
        {"ours": lambda: path("ours"), "bare": lambda: path("bare")}, Mode("t", 3, 1)
    )
    # A warm-up of each, then ours and bare back to back in every round, the order reversed
    # every other round (whoever runs second must not always be the same one).
    assert calls == ["ours", "bare", "ours", "bare", "bare", "ours", "ours", "bare"]
    assert rounds.ratio("ours", "bare").runs == (0.5, 1.0, 0.5)
    assert rounds.spread("bare").median == 20.0


def _row(median: float, target: float | None) -> Row:
    return Row(
        path="produce",
        case="200 B",
        ours="publish",
        baseline="bare",
        ratio=Spread((median - 0.1, median, median + 0.1)),
        target=target,
        ours_rate=1000,
        baseline_rate=2000,
    )


def test_the_table_names_each_missed_target() -> None:
    text = table([_row(0.5, 0.7), _row(0.9, 0.7), _row(0.3, None)])
    lines = text.splitlines()[2:]
    assert "0.50 (0.40-0.60) | ≥ 0.70 | **missed**" in lines[0]
    assert "| met |" in lines[1]
    assert "| - |" in lines[2]


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    out = tmp_path / "ratios.png"
    chart([_row(0.5, 0.7), _row(1.2, 1.0)], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
