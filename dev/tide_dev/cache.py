"""Where the harness keeps what outlives a test session: the Maven repository and classpaths."""

from __future__ import annotations

import os
from pathlib import Path

from tide_dev.errors import HarnessError


def cache_dir() -> Path:
    """`$TIDE_CACHE_DIR`, else `$XDG_CACHE_HOME/tide`, else `~/.cache/tide`; created on demand."""
    configured = os.environ.get("TIDE_CACHE_DIR")
    if configured:
        path = Path(configured)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "tide"
    path.mkdir(parents=True, exist_ok=True)
    return path


def built_tool(directory: Path, name: str, *, what: str | None = None) -> str:
    """The path of a binary `make tools` builds into `directory`, or a HarnessError
    naming it and the command that builds it."""
    path = directory / name
    if not os.access(path, os.X_OK):
        raise HarnessError(
            what or name,
            reason=f"not built at {path}",
            fix="make tools   (builds the test tiers' tools from the Go module proxy, once)",
        )
    return str(path)
