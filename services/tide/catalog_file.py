"""A catalog read from a YAML file into the validated model, with errors that name the
file, the entry and the field.

A platform team describes its own topics, services, groups, queues and events in a file
of its own; `Catalog.model_json_schema()` is that file's JSON Schema (published as
schemas/catalog.schema.json for editor completion).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tide.topology import Catalog, CatalogRulesError

# What names an entry of each list, for messages: `consumer_groups[billing].retry`.
_ENTRY_KEYS = ("name", "type", "service")


class CatalogFileError(ValueError):
    """A catalog file that cannot be read or does not validate; one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "\n  ".join(problems))


@cache
def read_catalog(path: str) -> Catalog:
    """`load_catalog`, once per path for the process: a process, the program and `make local`
    check a catalog at start and use it after, reading the file once."""
    return load_catalog(Path(path))


def load_catalog(path: Path) -> Catalog:
    """The catalog in `path` (YAML), validated as one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogFileError(path, ["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogFileError(path, [f"cannot be read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # A parse error carries its position; a reader error (a control character) its own.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise CatalogFileError(path, [f"{where}not valid YAML: {reason}"]) from None
    if not isinstance(data, dict):
        raise CatalogFileError(
            path, ["must be a mapping of sections (topics, services, consumer_groups, ...)"]
        )
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogFileError(
            path, [p for e in exc.errors() for p in _problems(data, e)]
        ) from None


def json_schema() -> str:
    """The catalog file's JSON Schema, as published."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tide.dev/schemas/catalog.schema.json",
        **Catalog.model_json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _problems(data: dict[str, Any], error: Any) -> list[str]:
    """One line per problem. The rules across entries (`Catalog._rules`) come as one error
    listing them all, each naming its entries; they run once every entry is well formed."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, CatalogRulesError):
        return list(cause.problems)
    message = str(error["msg"]).removeprefix("Value error, ")
    where = _where(data, error["loc"])
    return [f"{where}: {message}" if where else message]


def _where(data: dict[str, Any], loc: tuple[str | int, ...]) -> str:
    """`loc` (pydantic's path) with list indexes replaced by the entry's own name."""
    parts: list[str] = []
    node: Any = data
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and parts:
            node = node[key] if key < len(node) else None
            label = _label(node)
            parts[-1] += f"[{label}]" if label else f"[{key}]"
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def _label(entry: Any) -> str | None:
    if isinstance(entry, dict):
        for key in _ENTRY_KEYS:
            if isinstance(entry.get(key), str):
                return str(entry[key])
    return None
