"""How every benchmark measures: a warm-up, then rounds that run ours and the baseline back to
back (so drift on a shared machine hits both alike), and ratios taken within each round.

A figure is the median of the rounds with their min-max. Absolute rates are printed for
context only; the ratio is the result.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# A path is run by a callable that returns its own rate (events/s): each path times the
# part it is about (a consumer from its first record to its last, not its group join).
Path = Callable[[], float]


@dataclass(frozen=True)
class Mode:
    """How much to measure. Quick fits `make bench` in about five minutes."""

    name: str
    rounds: int
    scale: int  # multiplies each benchmark's record counts

    @property
    def full(self) -> bool:
        return self.name == "full"


QUICK = Mode("quick", rounds=5, scale=1)
FULL = Mode("full", rounds=7, scale=5)


@dataclass(frozen=True)
class Spread:
    """The median of some runs, with their min and max."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def text(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({min(self.runs):.{digits}f}-{max(self.runs):.{digits}f})"


@dataclass(frozen=True)
class Row:
    """One line of the results table: our path against its baseline."""

    path: str
    case: str
    ours: str
    baseline: str
    ratio: Spread
    target: float | None  # ratio ours/baseline we aim at (None: reported, no target)
    ours_rate: float
    baseline_rate: float
    unit: str = "events/s"
    extra: str = ""  # ceilings, latencies: what else a reader needs next to the ratio
    direction: str = "≥"

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio.median >= self.target


@dataclass(frozen=True)
class Section:
    """A result that is not a ratio (latencies at rates): its own Markdown under the table,
    and its targets as (what, with the figure; met)."""

    title: str
    markdown: str
    verdicts: tuple[tuple[str, bool], ...]


@dataclass
class Rounds:
    """Rates of each path across the measured rounds."""

    rates: dict[str, list[float]] = field(default_factory=dict)

    def spread(self, name: str) -> Spread:
        return Spread(tuple(self.rates[name]))

    def ratio(self, ours: str, baseline: str) -> Spread:
        pairs = zip(self.rates[ours], self.rates[baseline], strict=True)
        return Spread(tuple(o / b for o, b in pairs))


def interleaved(paths: Mapping[str, Path], mode: Mode, *, warmups: int = 1) -> Rounds:
    """Warm each path up, then run them one after another `mode.rounds` times, in reverse
    order every other round: whichever runs second inherits the broker's and the
    collector's state from the first, which measurably favours one side (bench/notes.md)."""
    for _ in range(warmups):
        for run in paths.values():
            run()
    result = Rounds({name: [] for name in paths})
    for n in range(mode.rounds):
        for name in alternating(list(paths), n):
            result.rates[name].append(paths[name]())
    return result


def alternating(items: list[str], round_: int) -> list[str]:
    """`items` in order on even rounds, reversed on odd ones."""
    return items if round_ % 2 == 0 else items[::-1]


def timed(count: int, run: Callable[[], None]) -> Path:
    """A path whose rate is `count` events over the wall time of `run`."""

    def path() -> float:
        started = time.perf_counter()
        run()
        return count / (time.perf_counter() - started)

    return path
