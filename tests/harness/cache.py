"""Where the harness keeps what outlives a test session: the Maven repository and classpaths."""

from __future__ import annotations

import os
from pathlib import Path


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
