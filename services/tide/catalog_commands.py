"""`tide catalog`: check a platform's catalog file, print the file's JSON Schema."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import Annotated

import typer

from tide.catalog_file import CatalogFileError, json_schema, load_catalog
from tide.console import EXIT_CONFIG, err, out

catalog_app = typer.Typer(help="Catalog files: a platform's topics, groups, queues, events.",
                          no_args_is_help=True)  # fmt: skip


@catalog_app.command()
def check(file: Annotated[Path, typer.Argument(help="the catalog file (YAML)")]) -> None:
    """Validate FILE as a whole; print what it declares and derives, or every problem."""
    try:
        catalog = load_catalog(file)
    except CatalogFileError as exc:
        for problem in exc.problems:
            err.print(f"error: {file}: {problem}")
        raise typer.Exit(EXIT_CONFIG) from None
    derived = sum(len(g.retry_topics) + 1 for g in catalog.consumer_groups)
    out.print(
        f"{file}: {_count(catalog.topics, 'topic')}, {_count(catalog.services, 'service')}, "
        f"{_count(catalog.consumer_groups, 'consumer group')} ({derived} retry and DLQ "
        f"topics), {_count(catalog.queues, 'queue')}, "
        f"{_count(catalog.queue_workers, 'queue worker')}, "
        f"{_count(catalog.events, 'event type')}",
        soft_wrap=True,
    )


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


@catalog_app.command()
def schema() -> None:
    """Print the catalog file's JSON Schema (schemas/catalog.schema.json is this output)."""
    print(json_schema(), end="")
