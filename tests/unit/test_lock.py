"""The image installs the lock file, so the lock must say what pyproject.toml asks for.

`services/Dockerfile` installs `services/requirements.lock` with `--require-hashes` and
then Tide with `--no-deps`: a dependency added to pyproject.toml but not locked would be
missing from the image, and a raised minimum would ship the old version.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
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


def _entries() -> dict[str, tuple[str, list[str], Marker | None]]:
    """name -> (version, hashes, marker) for each pinned package in the lock."""
    entries: dict[str, tuple[str, list[str], Marker | None]] = {}
    current: str | None = None
    for line in LOCK.read_text().splitlines():
        if match := _ENTRY.match(line):
            current = canonicalize_name(match["name"])
            marker = Marker(match["marker"].strip()) if match["marker"] else None
            entries[current] = (match["version"], [], marker)
        elif current is not None and (hashed := re.search(r"--hash=(\S+)", line)):
            entries[current][1].append(hashed[1])
    return entries


def _runtime() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _extra_requirements(requirement: Requirement) -> list[Requirement]:
    """What the requirement's extras add, read from the installed distribution's metadata."""
    found: list[Requirement] = []
    if not requirement.extras:
        return found
    for text in importlib.metadata.requires(requirement.name) or []:
        needed = Requirement(text)
        if needed.marker is None:
            continue
        wanted = any(needed.marker.evaluate({**IMAGE, "extra": e}) for e in requirement.extras)
        # Only what an extra adds: the plain dependencies are checked on their own.
        if wanted and not needed.marker.evaluate({**IMAGE, "extra": ""}):
            found.append(needed)
    return found


def test_every_pinned_package_carries_its_hash() -> None:
    unhashed = [name for name, (_, hashes, _) in _entries().items() if not hashes]
    assert not unhashed, f"{LOCK.name}: no --hash for {unhashed}: run `make lock`"


@pytest.mark.parametrize("requirement", _runtime(), ids=str)
def test_each_runtime_dependency_is_locked_at_a_version_it_allows(
    requirement: Requirement,
) -> None:
    entries = _entries()
    assert canonicalize_name(requirement.name) in entries, (
        f"{LOCK.name} does not pin {requirement}: run `make lock`"
    )
    for needed in [requirement, *_extra_requirements(requirement)]:
        name = canonicalize_name(needed.name)
        assert name in entries, (
            f"{LOCK.name} does not pin {needed} (from {requirement}): run `make lock`"
        )
        version, _, _ = entries[name]
        assert needed.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, outside {needed}: run `make lock`"
        )


def test_the_lock_pins_nothing_for_a_dependency_pyproject_dropped() -> None:
    # uv records why each package is there; one that only Tide wanted must still be wanted.
    wanted = {canonicalize_name(requirement.name) for requirement in _runtime()}
    direct: list[str] = []
    current = None
    for line in LOCK.read_text().splitlines():
        if match := _ENTRY.match(line):
            current = canonicalize_name(match["name"])
        elif current and line.strip() in (
            "# via tide (pyproject.toml)",
            "#   tide (pyproject.toml)",
        ):
            direct.append(current)
    assert direct, f"{LOCK.name} names no package as wanted by pyproject.toml"
    assert not set(direct) - wanted, (
        f"{LOCK.name} still pins {set(direct) - wanted}: run `make lock`"
    )


def test_the_image_gets_every_locked_package_for_its_platform() -> None:
    # A package locked only for another platform (colorama on Windows) is skipped by pip;
    # one this platform needs must be there unconditionally or by a marker it meets.
    entries = _entries()
    for requirement in _runtime():
        if canonicalize_name(requirement.name) not in entries:
            continue  # the test above names it
        version, _, marker = entries[canonicalize_name(requirement.name)]
        assert marker is None or marker.evaluate(IMAGE), (
            f"{LOCK.name} pins {requirement.name}=={version} only where {marker}"
        )
