"""What an experiment reports: hypothesis, action, what was observed (numbers), verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Report:
    experiment: str
    hypothesis: str
    actions: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def act(self, what: str) -> None:
        self.actions.append(what)

    def observe(self, **figures: Any) -> None:
        self.observed.update(figures)

    def expect(self, holds: bool, claim: str) -> bool:
        """Record `claim` as violated unless it holds; the experiment goes on either way."""
        if not holds:
            self.violations.append(claim)
        return holds

    @property
    def held(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        if self.held:
            return "held"
        return "VIOLATED: " + "; ".join(self.violations)

    def render(self) -> str:
        lines = [
            f"experiment  {self.experiment}",
            f"hypothesis  {self.hypothesis}",
            *(f"action      {a}" for a in self.actions),
            *(f"observed    {k} = {_figure(v)}" for k, v in self.observed.items()),
            f"verdict     {self.verdict}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "hypothesis": self.hypothesis,
            "actions": self.actions,
            "observed": self.observed,
            "verdict": "held" if self.held else "violated",
            "violations": self.violations,
        }


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_figure(v)}" for k, v in value.items()) or "-"
    return str(value)
