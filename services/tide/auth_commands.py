"""`tide auth`: make an API key for a client of the APIs (tide.auth)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from tide.auth import new_api_key as make_key
from tide.console import EXIT_CONFIG, err, out

auth_app = typer.Typer(help="Credentials for the APIs.", no_args_is_help=True)


@auth_app.command("new-key")
def new_key(
    name: Annotated[str, typer.Argument(help="who will hold the key, e.g. player-app")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="what the key may do (repeat): events:write, subscriptions:read,"
            " subscriptions:write, or your own APIs' scopes"
        ),
    ],
) -> None:
    """Print a new key once, on stdout, and on stderr the entry a stack keeps of it: its
    SHA-256 (tide:auth clients, or TIDE_AUTH_API_KEYS). The key itself is stored nowhere."""
    try:
        key, entry = make_key(name, scope)
    except ValidationError as exc:  # a name or scope the entry cannot hold
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        err.print(f"error: {where} {first['input']!r}: {first['msg']}")
        raise typer.Exit(EXIT_CONFIG) from None
    out.print(key, highlight=False)
    err.print(
        f"entry for the stack (tide:auth clients): {entry.model_dump_json()}",
        highlight=False,
        soft_wrap=True,
    )
