"""services/requirements.lock read the way pip reads it: pins, hashes and markers."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "services" / "requirements.lock"
# The image's interpreter and platform (services/Dockerfile, python:3.11-slim-bookworm).
IMAGE = {
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?:\s*;(?P<marker>[^\\]+))?"
)


Entry = tuple[str, list[str], Marker | None]
# uv's `# via` for a package pyproject.toml asks for itself, alone or among others.
_WANTED = ("# via tide (pyproject.toml)", "#   tide (pyproject.toml)")


@functools.cache
def _read() -> tuple[dict[str, Entry], tuple[str, ...]]:
    """One pass over the lock: its entries, and the names pyproject.toml asks for."""
    found: dict[str, Entry] = {}
    wanted: list[str] = []
    current: str | None = None
    for line in LOCK.read_text().splitlines():
        if match := _ENTRY.match(line):
            current = canonicalize_name(match["name"])
            marker = Marker(match["marker"].strip()) if match["marker"] else None
            found[current] = (match["version"], [], marker)
        elif current is None:
            continue
        elif hashed := re.search(r"--hash=(\S+)", line):
            found[current][1].append(hashed[1])
        elif line.strip() in _WANTED:
            wanted.append(current)
    return found, tuple(wanted)


def entries() -> dict[str, Entry]:
    """name -> (version, hashes, marker) for each pinned package in the lock."""
    return _read()[0]


def for_image() -> dict[str, str]:
    """name -> version of what pip installs from the lock on the image's platform."""
    return {
        name: version
        for name, (version, _, marker) in entries().items()
        if marker is None or marker.evaluate(IMAGE)
    }


def wanted_by_project() -> list[str]:
    """The packages uv records as wanted by Tide's own pyproject.toml (its `# via`)."""
    return list(_read()[1])
