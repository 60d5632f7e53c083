"""The program declared once per stack, shared by the tests of this directory."""

from __future__ import annotations

import pytest

from tests.unit.infra.program import Program, run


@pytest.fixture(scope="session")
def kind() -> Program:
    return run("kind")


@pytest.fixture(scope="session")
def cloud() -> Program:
    return run("cloud")


@pytest.fixture(scope="session", params=["kind", "cloud"])
def program(request: pytest.FixtureRequest) -> Program:
    fixture: Program = request.getfixturevalue(request.param)
    return fixture
