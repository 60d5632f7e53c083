"""The README and the Makefile say the same, and say each thing once, where it can be checked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_make_targets_table_lists_every_target_the_makefile_documents() -> None:
    documented = set(re.findall(r"^([a-z-]+):.*## ", MAKEFILE, re.MULTILINE)) - {"help"}
    table = _section("Make targets")
    listed = {
        name
        for row in re.findall(r"^\| (`make [^|]+`) \|", table, re.MULTILINE)
        for name in re.findall(r"make ([a-z-]+)", row)
    }
    assert listed == documented, (
        f"only in the README: {sorted(listed - documented)}; "
        f"only in the Makefile: {sorted(documented - listed)}"
    )


def test_one_go_version_everywhere() -> None:
    versions = set(re.findall(r"Go (?:≥ )?(\d+\.\d+)\+?", README + MAKEFILE))
    assert len(versions) == 1, f"Go versions named: {sorted(versions)}"


def test_the_diagram_shows_only_services_that_exist() -> None:
    from ott.catalog import CATALOG  # noqa: PLC0415

    diagram = README[
        README.index("```mermaid") : README.index("```", README.index("```mermaid") + 3)
    ]
    boxes = set(re.findall(r"\w+\[([a-z-]+)(?:<br/>| xN|\])", diagram))
    services = {s.name for s in CATALOG.services}
    assert "ranking" not in diagram, "there is no ranking service"
    assert boxes <= services, f"not services: {sorted(boxes - services)}"


def test_make_brokers_promises_no_registry() -> None:
    (line,) = [line for line in MAKEFILE.splitlines() if line.startswith("brokers:")]
    assert "registry" not in line, line


def test_exit_codes_tide_scale_and_the_local_chaos_suite_are_each_explained_once() -> None:
    assert README.count("Exit codes:") + README.count("exit code: 2") <= 1
    assert README.count("tide scale recommendation 3") == 1, "tide scale is explained twice"
    words = " ".join(README.split())
    assert words.count("SIGSTOP a member past its session timeout") == 1, "chaos, twice"


def test_the_readme_says_that_destroy_deletes_the_data() -> None:
    assert "`pulumi destroy` deletes the data." in _section("Quickstart")
