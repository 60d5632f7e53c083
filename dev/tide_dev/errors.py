"""The one error the broker harness raises: what failed, why, and the command that fixes it."""

from __future__ import annotations

from pathlib import Path


class HarnessError(RuntimeError):
    """A broker could not be provided; the message names it, shows its log tail and the fix."""

    def __init__(self, what: str, *, reason: str, fix: str = "", log: Path | None = None) -> None:
        parts = [f"{what}: {reason}"]
        if log is not None:
            parts.append(f"last lines of {log}:\n{tail(log)}")
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("\n".join(parts))
        self.what = what
        self.reason = reason
        self.fix = fix
        self.log = log


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, indented, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "    (no log was written)"
    kept = text.splitlines()[-lines:] or ["(empty)"]
    return "\n".join(f"    {line}" for line in kept)
