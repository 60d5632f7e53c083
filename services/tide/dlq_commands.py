"""`tide dlq`: list, show and redrive each consumer group's dead letters."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tide.console import EXIT_USAGE, GroupOption, OutputOption, err, load_settings, out, print_rows
from tide.settings import Settings

dlq_app = typer.Typer(
    help="Dead letters: inspect them, send them back after a fix.", no_args_is_help=True
)

FilterOption = Annotated[
    str | None, typer.Option("--filter", help="only records matching, e.g. type=order.placed")
]


def dead_letter_queues(settings: Settings, group: str | None) -> list[Any]:
    from tide.dlq import DeadLetterQueue  # noqa: PLC0415

    catalog = settings.catalog()
    names = [g.name for g in catalog.consumer_groups]
    if group is not None and group not in names:
        err.print(f"error: unknown group {group!r}; known: " + ", ".join(names))
        raise typer.Exit(EXIT_USAGE)
    chosen = [g for g in catalog.consumer_groups if group is None or g.name == group]
    return [DeadLetterQueue(settings.kafka_client_config(), g) for g in chosen]


def _event_type(filter_: str | None) -> str | None:
    if filter_ is None:
        return None
    key, _, value = filter_.partition("=")
    if key != "type" or not value:
        err.print(f"error: --filter must look like type=<event type>, got {filter_!r}")
        raise typer.Exit(EXIT_USAGE)
    return value


@dlq_app.command("ls")
def dlq_ls(group: GroupOption = None, output: OutputOption = "table") -> None:
    """Depth and the latest reason of each group's DLQ."""
    settings = load_settings("kafka_bootstrap")
    rows = []
    for queue in dead_letter_queues(settings, group):
        depth = queue.depth()
        latest = queue.show(limit=depth)[-1:] if depth else []
        rows.append(
            {
                "group": queue.group.name,
                "dlq": queue.group.dlq_topic,
                "depth": depth,
                "last_reason": latest[0].reason if latest else "",
                "last_error": latest[0].error if latest else "",
            }
        )
    print_rows(rows, output, "group", "dlq", "depth", "last reason", "last error")


@dlq_app.command("show")
def dlq_show(
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")],
    filter_: FilterOption = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many records")] = 20,
    output: OutputOption = "table",
) -> None:
    """The dead letters of one group, oldest first, with why they died."""
    settings = load_settings("kafka_bootstrap")
    (queue,) = dead_letter_queues(settings, group)
    letters = queue.show(limit=limit, event_type=_event_type(filter_))
    rows = [
        {
            "partition": d.partition,
            "offset": d.offset,
            "type": d.event_type,
            "id": d.event_id,
            "reason": d.reason,
            "attempt": d.attempt,
            "error": d.error,
            "from": d.origin,
        }
        for d in letters
    ]
    print_rows(rows, output, "partition", "offset", "type", "id", "reason", "attempt", "error",
               "from")  # fmt: skip


@dlq_app.command("redrive")
def dlq_redrive(
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")],
    filter_: FilterOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many records")] = None,
    to: Annotated[
        str, typer.Option(help="retry (the group's own retry topic) or original")
    ] = "retry",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report, change nothing")] = False,
    output: OutputOption = "table",
) -> None:
    """Send dead letters back (after the fix). Safe to interrupt and run again."""
    if to not in {"retry", "original"}:
        err.print(f"error: --to must be retry or original, got {to!r}")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings("kafka_bootstrap")
    (queue,) = dead_letter_queues(settings, group)
    with out.status(f"redriving {queue.group.dlq_topic}"):
        report = queue.redrive(
            limit=limit,
            event_type=_event_type(filter_),
            to_original=to == "original",
            dry_run=dry_run,
        )
    summary = {
        "group": group,
        "redriven": report.redriven,
        "skipped": report.skipped,
        "destinations": report.destinations,
        "dry_run": dry_run,
        "remaining": queue.depth(),
    }
    if output == "json":
        out.print_json(json.dumps(summary))
        return
    verb = "would redrive" if dry_run else "redrove"
    out.print(
        f"{verb} {report.redriven} record(s) from {queue.group.dlq_topic};"
        f" {summary['remaining']} left"
    )
    for topic, count in report.destinations.items():
        out.print(f"  {count} -> {topic}")
