"""`tide db` and `tide outbox`: the event store's schema and roles, and the outbox rows
the relay set aside."""

from __future__ import annotations

from typing import Annotated

import typer

from tide.console import (
    EXIT_CONFIG,
    EXIT_USAGE,
    OutputOption,
    database,
    err,
    load_settings,
    out,
    postgres_unreachable,
    print_rows,
)
from tide.needs import command_needs

db_app = typer.Typer(help="The PostgreSQL event store.", no_args_is_help=True)


@db_app.command("migrate")
def migrate(
    grant: Annotated[
        bool,
        typer.Option(
            "--grant",
            help="then give each catalog service's role exactly its privileges, waiting"
            " for the roles to exist (CloudNativePG makes managed roles after the cluster)",
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="seconds to wait for the roles (with --grant)")
    ] = 300.0,
) -> None:
    """Apply Tide's migrations, then the SQL files of the catalog's `migrations` package
    (idempotent; safe to run from several pods), as the schema's owner."""
    import psycopg  # noqa: PLC0415

    from tide.store.grants import (  # noqa: PLC0415
        database_services,
        grant_when_roles_exist,
        role_name,
    )
    from tide.store.migrations import migrate as apply  # noqa: PLC0415

    settings = load_settings(*command_needs(("db", "migrate")).required_settings)
    dsn = settings.postgres_dsn.get_secret_value()
    catalog = settings.catalog()
    try:
        applied = apply(dsn, catalog)
        out.print(
            f"applied migrations: {', '.join(applied)}" if applied else "database is up to date"
        )
        if grant:
            with err.status(f"waiting for the roles of {len(database_services(catalog))} services"):
                granted = grant_when_roles_exist(dsn, catalog, timeout=wait)
            granted_now = set(map(role_name, database_services(catalog)))
            for role, tables in granted.items():
                out.print(
                    f"role {role}: " + (", ".join(sorted(tables)) or "no tables")
                    if role in granted_now
                    else f"role {role}: none (its service left the catalog)"
                )
    except psycopg.OperationalError as exc:
        postgres_unreachable(dsn, exc)
    except (TimeoutError, LookupError, ValueError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


outbox_app = typer.Typer(
    help="Outbox rows that can never be published, set aside by the relay.", no_args_is_help=True
)


@outbox_app.command("ls")
def outbox_ls(
    limit: Annotated[int, typer.Option(min=1, help="at most this many rows")] = 50,
    output: OutputOption = "table",
) -> None:
    """The outbox rows the relay set aside, oldest first, with why."""
    from tide.store.outbox import dead_letters  # noqa: PLC0415

    settings = load_settings("postgres_dsn")
    with database(settings) as conn:
        rows = dead_letters(conn, limit=limit)
    print_rows(rows, output, "id", "event_id", "type", "reason", "failed_at")


@outbox_app.command("resend")
def outbox_resend(
    ids: Annotated[list[int] | None, typer.Argument(help="row ids (see `tide outbox ls`)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every row set aside")] = False,
) -> None:
    """Put set-aside rows back in the outbox (after fixing their data or the schema); the
    relay publishes them, or sets them aside again with the new reason."""
    from tide.store.outbox import resend  # noqa: PLC0415

    if not ids and not all_:
        err.print("error: name row ids or pass --all")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings("postgres_dsn")
    with database(settings) as conn:
        moved = resend(conn, None if all_ else list(ids or []))
    out.print(f"{moved} row(s) back in the outbox")
