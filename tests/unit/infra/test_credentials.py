"""Every credential is derived from the stack's one secret seed: stable, distinct, secret."""

from __future__ import annotations

import re

import pytest
from infra.credentials import PASSWORD_LENGTH, SEED_KEY, derive

from tests.unit.infra.program import TEST_SEED, Program, run, stack_config


def test_a_credential_is_stable_and_distinct_per_purpose() -> None:
    first = derive(TEST_SEED, "kafka/video-service")
    assert first == derive(TEST_SEED, "kafka/video-service"), "a rerun must not rotate it"
    assert first != derive(TEST_SEED, "kafka/recommendation")
    assert first != derive(TEST_SEED + "x", "kafka/video-service")
    # Nothing that a URL, a DSN or a JAAS line would have to escape.
    assert re.fullmatch(rf"[A-Za-z0-9_-]{{{PASSWORD_LENGTH}}}", first)


def test_a_short_seed_is_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match=rf"tide:{SEED_KEY} is 5 characters long"):
        derive("short", "x")


def test_the_program_refuses_to_run_without_a_seed_and_says_how_to_set_one() -> None:
    config = stack_config("kind")
    del config[f"tide:{SEED_KEY}"]
    with pytest.raises(Exception, match=rf"tide:{SEED_KEY} is not set.*pulumi config set --secret"):
        run("kind", config)


def test_every_password_is_derived_and_kept_secret(program: Program) -> None:
    secrets = [r for r in program.of_type("core/v1:Secret") if "stringData" in r.inputs]
    derived = {derive(TEST_SEED, p) for p in ("postgres/owner", "kafka/video-service")}
    found = set()
    for secret in secrets:
        values = secret.inputs["stringData"]
        for key, value in values.items():
            if any(d in str(value) for d in derived):
                found.add(value)
                assert "stringData" in secret.secret_inputs, f"{secret.name}.{key} in clear"
    assert len(found) >= 2
    # No provider besides Kubernetes: nothing to install, no keys kept in the state.
    assert {r.type.split(":")[0] for r in program.resources} <= {"kubernetes", "tide", "pulumi"}
