"""What a run measured, printed after the test summary, one section per tier: the chaos
experiments' steady states, the engine's step times and scaling timelines, the node's pod
start times. They are the suites' output as much as pass or fail is."""

from __future__ import annotations

CHAOS = "chaos experiment reports"
ENGINE = "engine tier: pulumi steps and operators"
NODE = "node tier: pods on the real node"

SECTIONS: dict[str, list[str]] = {}


def report(section: str, text: str) -> None:
    SECTIONS.setdefault(section, []).append(text)
