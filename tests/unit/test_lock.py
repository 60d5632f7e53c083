"""The image installs the lock file, so the lock must say what pyproject.toml asks for.

`services/Dockerfile` installs `services/requirements.lock` with `--require-hashes` and
then Tide with `--no-deps`: a dependency added to pyproject.toml but not locked would be
missing from the image, and a raised minimum would ship the old version.
"""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.lockfile import IMAGE, LOCK, ROOT, entries, for_image, wanted_by_project


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
    unhashed = [name for name, (_, hashes, _) in entries().items() if not hashes]
    assert not unhashed, f"{LOCK.name}: no --hash for {unhashed}: run `make lock`"


@pytest.mark.parametrize("requirement", _runtime(), ids=str)
def test_each_runtime_dependency_is_locked_at_a_version_it_allows(
    requirement: Requirement,
) -> None:
    pinned = entries()
    assert canonicalize_name(requirement.name) in pinned, (
        f"{LOCK.name} does not pin {requirement}: run `make lock`"
    )
    for needed in [requirement, *_extra_requirements(requirement)]:
        name = canonicalize_name(needed.name)
        assert name in pinned, (
            f"{LOCK.name} does not pin {needed} (from {requirement}): run `make lock`"
        )
        version, _, _ = pinned[name]
        assert needed.specifier.contains(version, prereleases=True), (
            f"{LOCK.name} pins {name}=={version}, outside {needed}: run `make lock`"
        )


def test_the_lock_pins_nothing_for_a_dependency_pyproject_dropped() -> None:
    # uv records why each package is there; one that only Tide wanted must still be wanted.
    wanted = {canonicalize_name(requirement.name) for requirement in _runtime()}
    direct = wanted_by_project()
    assert direct, f"{LOCK.name} names no package as wanted by pyproject.toml"
    assert not set(direct) - wanted, (
        f"{LOCK.name} still pins {set(direct) - wanted}: run `make lock`"
    )


def test_the_image_gets_every_locked_package_for_its_platform() -> None:
    # A package locked only for another platform (colorama on Windows) is skipped by pip;
    # one this platform needs must be there unconditionally or by a marker it meets.
    pinned = entries()
    for requirement in _runtime():
        if canonicalize_name(requirement.name) not in pinned:
            continue  # the test above names it
        version, _, marker = pinned[canonicalize_name(requirement.name)]
        assert marker is None or marker.evaluate(IMAGE), (
            f"{LOCK.name} pins {requirement.name}=={version} only where {marker}"
        )


def test_the_tests_run_the_runtime_the_image_ships() -> None:
    # `make setup` installs the lock, then the extras held to it (pip's constraints).
    locked = for_image()
    installed = {name: importlib.metadata.version(name) for name in locked}
    assert installed == locked, "the venv differs from the lock: run `make setup`"
