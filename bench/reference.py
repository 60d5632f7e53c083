"""How the table names a figure that is neither ours nor the baseline: a loop that does
nothing is a reference, and a Java tool's rate is a ceiling only when the run says so."""

from __future__ import annotations

from collections.abc import Iterable


def do_nothing(rate: float) -> str:
    """A loop that polls and counts: faster than any path that reads what it consumes."""
    return f"do-nothing poll loop {rate:,.0f}/s (reference, not a ceiling)"


def java(tool: str, rate: float, python: Iterable[float]) -> str:
    """`tool`'s rate, called a ceiling only if it is above every Python figure of its row
    (on a shared two-core machine the JVM is sometimes below a Python loop)."""
    kind = "ceiling" if rate > max(python) else "reference"
    return f"Java {tool} {rate:,.0f}/s ({kind})"
