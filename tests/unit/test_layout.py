"""What ships stands apart: the runtime knows no platform, the product imports no tool.

The runtime (services/tide) serves whatever catalog it is given; the reference OTT
platform (services/ott) is one user of it, as a team's package would be. The Pulumi
component and program (infra) ship too, so none of them may lean on the tests, the
benchmarks or the local tools.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ott.catalog import CATALOG

_ROOT = Path(__file__).resolve().parents[2]
_RUNTIME = _ROOT / "services" / "tide"
_SHIPPED = {"services/tide": ("ott",), "services/ott": (), "infra": ()}
_TOOLS = ("tests", "tide_dev", "bench")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(_SHIPPED))
def test_nothing_that_ships_imports_a_tool(package: str) -> None:
    refused = (*_TOOLS, *_SHIPPED[package])
    imported = {path: _imports(path) & set(refused) for path in (_ROOT / package).rglob("*.py")}
    offenders = {
        str(path.relative_to(_ROOT)): sorted(found) for path, found in imported.items() if found
    }
    assert not offenders, f"{package} imports {refused}: {offenders}"


def test_the_runtime_names_no_topic_service_or_event_of_the_reference_platform() -> None:
    names = (
        {topic.name for topic in CATALOG.topics}
        | {service.name for service in CATALOG.services}
        | {group.name for group in CATALOG.consumer_groups}
        | {queue.name for queue in CATALOG.queues}
        | {exchange.name for exchange in CATALOG.exchanges}
        | {event.type for event in CATALOG.events}
        | {table for service in CATALOG.services for table in service.table_privileges()}
    )
    # A whole name only: "subscriptions:write" is a scope, "badges" inside a word is not.
    pattern = re.compile(
        r"(?<![\w.-])("
        + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
        + r")(?![\w-])"
    )
    found = [
        f"{path.relative_to(_ROOT)}:{text[: match.start()].count(chr(10)) + 1}: {match[0]}"
        for path in sorted(_RUNTIME.rglob("*.py"))
        for text in [path.read_text(encoding="utf-8")]
        for match in pattern.finditer(text)
    ]
    assert not found, "the runtime names the reference platform: " + ", ".join(found)


def test_the_reference_platform_brings_its_own_schemas_and_tables() -> None:
    # Its catalog names packages of its own, as a team's does: no part of it is the runtime's.
    assert CATALOG.events[0].schemas == "ott.schemas"
    assert CATALOG.migrations == "ott.migrations"
    assert not list((_RUNTIME / "events").glob("*.json"))
