"""What every group of the `tide` command shares: what it prints, the codes it exits
with, its settings and its connection to the event store."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tide.observability import configure_logging
from tide.settings import MissingSettingError, Settings

# Errors are single lines a log collector keeps whole: never wrapped at the terminal width,
# and plain text: a message quoting `[a-z0-9-]` lost it to Rich's markup.
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
out = Console()

EXIT_USAGE = 2
EXIT_CONFIG = 3
# A broker, database or registry did not answer. One-shot commands (the Jobs) exit
# with it at once: Kubernetes restarts a Job's pod with its own backoff.
EXIT_UNAVAILABLE = 4

GroupOption = Annotated[
    str | None, typer.Option("--group", "-g", help="consumer group (default: every group)")
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]


def print_rows(rows: Sequence[Mapping[str, Any]], output: str, *headers: str) -> None:
    """`rows` as JSON (`--output json`), else as a table under `headers`, one line each."""
    if output == "json":
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(*headers)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


def load_settings(*required: str) -> Settings:
    """Settings from TIDE_*; a missing or invalid one ends the command with exit code 3."""
    try:
        settings = Settings()
        settings.require(*required)
    except ValidationError as exc:
        # One line per bad setting, naming it: "TIDE_LOG_LEVEL='LOUD' is not one of ...".
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if "TIDE_" not in message:  # pydantic's own messages do not name the variable
                message = f"TIDE_{str(error['loc'][0]).upper()}: {message}"
            err.print(f"error: {message}")
        raise typer.Exit(EXIT_CONFIG) from None
    except (ValueError, MissingSettingError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def postgres_unreachable(dsn: str, exc: Exception) -> NoReturn:
    import psycopg  # noqa: PLC0415

    where = psycopg.conninfo.conninfo_to_dict(dsn)
    err.print(
        f"error: cannot reach PostgreSQL at {where.get('host')}:{where.get('port')}"
        f" (database {where.get('dbname')}): {str(exc).strip().splitlines()[0]}"
    )
    raise typer.Exit(EXIT_UNAVAILABLE) from None


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[Any]:
    """A connection to the event store, or exit 4 naming where PostgreSQL was not reached."""
    import psycopg  # noqa: PLC0415

    from tide.errors import pg_conninfo  # noqa: PLC0415

    dsn = settings.postgres_dsn.get_secret_value()
    try:
        conn = psycopg.connect(pg_conninfo(dsn), autocommit=True)
    except psycopg.OperationalError as exc:
        postgres_unreachable(dsn, exc)
    with conn:
        yield conn
