"""A platform's own tables: the SQL files of its catalog's `migrations` package, applied by
`tide db migrate` after Tide's, once each and only forward; its services' roles get them as
the catalog's `tables` say, serial columns included."""

from __future__ import annotations

import importlib
import re
import secrets
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from ott.catalog import CATALOG
from tide.catalog_file import read_catalog
from tide.store.grants import database_services, grant, role_name
from tide.store.migrations import migrate
from tide_dev import BrokerSession

pytestmark = pytest.mark.timeout(120)

EXAMPLE = Path(__file__).parents[2] / "examples" / "orders"


def test_the_shops_own_table_is_made_once_and_only_billing_may_write_it(
    broker_session: BrokerSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the shop's package, as its image installs it
    server = broker_session.own_postgres("this test makes roles in it")
    shop = read_catalog(str(EXAMPLE / "catalog.yaml"))
    applied = migrate(server.dsn, shop)
    assert migrate(server.dsn, shop) == [], "a second run applies nothing"
    with psycopg.connect(server.dsn) as conn:
        (recorded,) = conn.execute(
            "SELECT count(*) FROM tide_catalog_migrations"
            " WHERE package = 'orders.migrations' AND name = '0001_invoice_ledger.sql'"
        ).fetchone() or (0,)
    assert recorded == 1, applied
    dsns = {
        service: server.ensure_role(role_name(service), secrets.token_urlsafe(16))
        for service in database_services(shop)
    }
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        granted = grant(conn, shop)
    assert set(granted["billing"]) >= {"invoice_ledger"}
    assert granted["billing"]["invoice_ledger"] == ("INSERT",)
    order = secrets.token_hex(6)
    with psycopg.connect(dsns["billing"]) as conn:
        # The serial column draws from the table's sequence: granted with the table.
        conn.execute(
            "INSERT INTO invoice_ledger (order_id, customer_id, amount_cents, currency)"
            " VALUES (%s, 'c-1', 1250, 'EUR')",
            (order,),
        )
    with psycopg.connect(server.dsn) as conn:
        (number,) = conn.execute(
            "SELECT invoice_number FROM invoice_ledger WHERE order_id = %s", (order,)
        ).fetchone() or (0,)
    assert number > 0
    # Append-only to billing, as the shop's catalog says: not read, changed or removed.
    for statement in (
        "SELECT * FROM invoice_ledger",
        "UPDATE invoice_ledger SET amount_cents = 0",
        "DELETE FROM invoice_ledger",
    ):
        with (
            psycopg.connect(dsns["billing"]) as conn,
            pytest.raises(errors.InsufficientPrivilege, match="invoice_ledger"),
        ):
            conn.execute(statement)
    for other in sorted(set(dsns) - {"billing"}):
        with (
            psycopg.connect(dsns[other]) as conn,
            pytest.raises(errors.InsufficientPrivilege, match="invoice_ledger"),
        ):
            conn.execute("SELECT * FROM invoice_ledger")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A fresh migrations package on the path: its name and directory."""
    name = f"shop_{secrets.token_hex(4)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return name, tmp_path / name


def test_migrations_only_go_forward(database: str, package: tuple[str, Path]) -> None:
    name, directory = package
    table = f"ledger_{secrets.token_hex(4)}"
    first = directory / "0002_ledger.sql"
    first.write_text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY);")
    catalog = CATALOG.model_copy(update={"migrations": name})
    assert migrate(database, catalog) == [f"{name}/0002_ledger.sql"]

    first.write_text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, note text);")
    with pytest.raises(
        ValueError, match=re.escape(f"{name}/0002_ledger.sql was changed after it was")
    ):
        migrate(database, catalog)
    first.write_text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY);")

    first.rename(directory / "0002_ledgers.sql")
    with pytest.raises(ValueError, match=re.escape("0002_ledger.sql was applied and is now named")):
        migrate(database, catalog)
    (directory / "0002_ledgers.sql").unlink()
    with pytest.raises(ValueError, match=re.escape("0002_ledger.sql was applied and is gone")):
        migrate(database, catalog)
    first.write_text(f"CREATE TABLE {table} (id bigserial PRIMARY KEY);")

    (directory / "0001_early.sql").write_text("SELECT 1;")
    with pytest.raises(
        ValueError, match=re.escape("0001_early.sql is new but numbered before 0002")
    ):
        migrate(database, catalog)
    (directory / "0001_early.sql").unlink()

    (directory / "3_notes.sql").write_text("SELECT 1;")
    with pytest.raises(
        ValueError, match=re.escape("3_notes.sql must be named '<NNNN>_<name>.sql'")
    ):
        migrate(database, catalog)
    (directory / "3_notes.sql").unlink()

    # A failing file leaves nothing of itself, and is applied once it is mended.
    broken = directory / "0003_notes.sql"
    failing = f"ALTER TABLE {table} ADD COLUMN note text; SELECT * FROM nowhere;"  # noqa: S608
    broken.write_text(failing)
    with pytest.raises(errors.UndefinedTable):
        migrate(database, catalog)
    broken.write_text(f"ALTER TABLE {table} ADD COLUMN note text;")
    assert migrate(database, catalog) == [f"{name}/0003_notes.sql"]


def test_a_catalog_naming_no_such_package_is_refused(database: str) -> None:
    catalog = CATALOG.model_copy(update={"migrations": "no_such_shop.migrations"})
    with pytest.raises(LookupError, match=re.escape("no Python package 'no_such_shop.migrations'")):
        migrate(database, catalog)
