"""Each service's PostgreSQL role may use its own tables as its code does, and nothing else.

The harness's server makes every database service's role as CloudNativePG makes a managed
role; `tide db migrate --grant` (what the platform's migrate Job runs, as the owner) then
grants. Connected as each role, every statement on every table of the schema is tried:
what `tide.store.grants` grants runs, the rest is refused with insufficient_privilege
(SQLSTATE 42501), and no role may change the schema.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from infra.components.catalog import catalog_text
from psycopg import errors, sql

from ott.catalog import CATALOG, REFERENCE_CATALOG
from tide.store.grants import (
    DELETE,
    INSERT,
    PLATFORM_TABLES,
    SELECT,
    UPDATE,
    database_services,
    privileges,
    role_name,
)
from tide.store.migrations import migrate
from tide.store.processed import mark_processed
from tide_dev import BrokerSession

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Roles:
    owner: str  # the schema owner's DSN
    dsns: dict[str, str]  # service -> its role's DSN


def _tide_db(
    owner_dsn: str, *args: str, catalog: Path = REFERENCE_CATALOG
) -> subprocess.CompletedProcess[str]:
    """`tide db ARGS` as the owner, with `catalog` (default: the reference one)."""
    env = {**os.environ, "TIDE_POSTGRES_DSN": owner_dsn, "TIDE_CATALOG_FILE": str(catalog)}
    return subprocess.run(
        [sys.executable, "-m", "tide", "db", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def roles(broker_session: BrokerSession) -> Roles:
    server = broker_session.own_postgres("this test makes roles in it")
    migrate(server.dsn, CATALOG)
    dsns = {
        service: server.ensure_role(role_name(service), secrets.token_urlsafe(16))
        for service in database_services(CATALOG)
    }
    granted = _tide_db(server.dsn, "migrate", "--grant", "--wait", "30")
    assert granted.returncode == 0, granted.stderr
    for service in dsns:
        assert f"role {role_name(service)}:" in granted.stdout, granted.stdout
    return Roles(server.dsn, dsns)


def _tables(owner: str) -> dict[str, str]:
    """Every table of the schema -> one of its columns."""
    with psycopg.connect(owner) as conn:
        rows = conn.execute(
            "SELECT table_name, min(column_name) FROM information_schema.columns"
            " WHERE table_schema = 'public' GROUP BY table_name"
        ).fetchall()
    return dict(rows)


def _statement(privilege: str, table: str, column: str) -> sql.Composed:
    """A statement that needs `privilege` on `table` and changes nothing."""
    name, col = sql.Identifier(table), sql.Identifier(column)
    match privilege:
        case "SELECT":
            return sql.SQL("SELECT * FROM {} WHERE false").format(name)
        case "INSERT":  # refused before any constraint is checked, or fails on one
            return sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name)
        case "UPDATE":
            return sql.SQL("UPDATE {} SET {} = DEFAULT WHERE false").format(name, col)
        case "DELETE":
            return sql.SQL("DELETE FROM {} WHERE false").format(name)
        case "TRUNCATE":
            return sql.SQL("TRUNCATE {}").format(name)
    raise ValueError(privilege)


def _refused(dsn: str, statement: sql.Composed) -> bool:
    """Whether PostgreSQL refused `statement` to this role for want of a privilege; whatever
    it did is rolled back."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except errors.InsufficientPrivilege as exc:
            # A row policy's refusal comes after the privilege check (test below).
            return "row-level security" not in str(exc)
        except (errors.NotNullViolation, errors.CheckViolation):
            return False  # past the privilege check
        finally:
            conn.rollback()
    return False


def test_each_role_uses_its_own_tables_as_its_code_does_and_nothing_else(roles: Roles) -> None:
    tables = _tables(roles.owner)
    assert set(tables) >= PLATFORM_TABLES, "the migrations made the platform's tables"
    wrong: list[str] = []
    for service, dsn in sorted(roles.dsns.items()):
        granted = privileges(CATALOG, service)
        assert set(granted) <= set(tables), f"{service} is granted tables the schema lacks"
        for table, column in sorted(tables.items()):
            for privilege in (SELECT, INSERT, UPDATE, DELETE, "TRUNCATE"):
                allowed = privilege in granted.get(table, ())
                if _refused(dsn, _statement(privilege, table, column)) == allowed:
                    verdict = "refused" if allowed else "allowed"
                    wrong.append(f"{service}: {privilege} on {table} {verdict}")
    assert not wrong, "\n".join(wrong)


def test_no_role_touches_another_services_tables(roles: Roles) -> None:
    owner_of = {table: s.name for s in CATALOG.services for table in s.table_privileges()}
    assert owner_of, "the reference catalog gives its services tables"
    reached = [
        f"{service}: {privilege} on {table}, {owner_of[table]}'s"
        for service, dsn in sorted(roles.dsns.items())
        for table, column in sorted(_tables(roles.owner).items())
        if table in owner_of and owner_of[table] != service
        for privilege in (SELECT, INSERT, UPDATE, DELETE)
        if not _refused(dsn, _statement(privilege, table, column))
    ]
    assert not reached, "\n".join(reached)


def test_a_role_sees_and_marks_only_its_own_consumers_processed_events(roles: Roles) -> None:
    marking = {s: CATALOG.consumers_of(s) for s in sorted(roles.dsns) if CATALOG.consumers_of(s)}
    assert len(marking) >= 2, "the reference catalog has several marking services"
    everyone = {name for names in marking.values() for name in names}
    event = secrets.token_hex(8)
    with psycopg.connect(roles.owner, autocommit=True) as conn:
        for name in everyone:
            mark_processed(conn, name, [event])
    wrong: list[str] = []
    for service, own in marking.items():
        others = sorted(everyone - set(own))
        with psycopg.connect(roles.dsns[service]) as conn:
            seen = conn.execute(
                "SELECT consumer FROM processed_events WHERE event_id = %s", (event,)
            ).fetchall()
            if {row[0] for row in seen} != set(own):
                wrong.append(f"{service} sees the marks of {sorted(row[0] for row in seen)}")
            gone = conn.execute(
                "DELETE FROM processed_events WHERE consumer = ANY(%s)", (others,)
            ).rowcount
            if gone:
                wrong.append(f"{service} deleted {gone} marks of other consumers")
            # Its own marks, by the statement its runner uses; another's are refused.
            fresh = secrets.token_hex(8)
            if mark_processed(conn, own[0], [fresh]) != {fresh}:
                wrong.append(f"{service} cannot mark its own {own[0]}")
            conn.commit()
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
                mark_processed(conn, others[0], [fresh])
            conn.rollback()
    assert not wrong, "\n".join(wrong)
    with psycopg.connect(roles.owner) as conn:
        (kept,) = conn.execute(
            "SELECT count(*) FROM processed_events WHERE event_id = %s", (event,)
        ).fetchone() or (0,)
    assert kept == len(everyone), "every consumer's mark is still there"


def test_no_role_may_change_the_schema(roles: Roles) -> None:
    changes = [
        sql.SQL("CREATE TABLE {} (id integer)").format(sql.Identifier(f"t_{secrets.token_hex(4)}")),
        sql.SQL("ALTER TABLE events ADD COLUMN stolen text"),
        sql.SQL("DROP TABLE processed_events"),
        sql.SQL("CREATE INDEX ON processed_events (processed_at)"),
        sql.SQL("CREATE TEMPORARY TABLE scratch (id integer)"),
    ]
    allowed = [
        f"{service}: {change.as_string(None)}"
        for service, dsn in sorted(roles.dsns.items())
        for change in changes
        if not _refused(dsn, change)
    ]
    assert not allowed, "\n".join(allowed)


def test_migrate_grant_names_the_roles_that_do_not_exist(roles: Roles) -> None:
    with psycopg.connect(roles.owner, autocommit=True) as conn:
        conn.execute('ALTER ROLE "analytics" RENAME TO "analytics-away"')
        try:
            result = _tide_db(roles.owner, "migrate", "--grant", "--wait", "1")
        finally:
            conn.execute('ALTER ROLE "analytics-away" RENAME TO "analytics"')
    assert result.returncode != 0
    assert "no role 'analytics' after 1 s" in result.stderr, result.stderr


def test_migrate_grant_names_a_listed_table_no_migration_made(roles: Roles, tmp_path: Path) -> None:
    services = [
        s.model_copy(update={"tables": (*s.tables, "ledger_lines")}) if s.name == "badges" else s
        for s in CATALOG.services
    ]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_text(CATALOG.model_copy(update={"services": tuple(services)})))
    result = _tide_db(roles.owner, "migrate", "--grant", "--wait", "1", catalog=catalog)
    assert result.returncode != 0
    assert "no table 'ledger_lines' in the database" in result.stderr, result.stderr


def test_a_service_that_leaves_the_catalog_loses_its_privileges(
    roles: Roles, tmp_path: Path
) -> None:
    """`tide db migrate --grant` with a catalog without badges takes everything from its role
    and leaves the others theirs; with badges back, the role has its tables again."""
    without = CATALOG.model_copy(
        update={
            "services": tuple(s for s in CATALOG.services if s.name != "badges"),
            "consumer_groups": tuple(g for g in CATALOG.consumer_groups if g.service != "badges"),
        }
    )
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(catalog_text(without))
    badges, analytics = roles.dsns["badges"], roles.dsns["analytics"]
    reads = _statement(SELECT, "completions", "user_id")
    marks = _statement(SELECT, "processed_events", "consumer")
    assert not _refused(badges, reads)

    left = _tide_db(roles.owner, "migrate", "--grant", "--wait", "30", catalog=catalog)
    try:
        assert left.returncode == 0, left.stderr
        assert "role badges: none (its service left the catalog)" in left.stdout, left.stdout
        assert _refused(badges, reads)
        assert _refused(badges, marks)
        assert not _refused(analytics, _statement(SELECT, "viewing_sessions", "user_id"))
        assert not _refused(analytics, marks)
        with psycopg.connect(roles.owner) as conn:
            owned = conn.execute(
                "SELECT count(*) FROM processed_event_owners WHERE role = 'badges'"
            ).fetchone()
        assert owned == (0,), "the departed role still owns consumers' marks"
    finally:
        back = _tide_db(roles.owner, "migrate", "--grant", "--wait", "30")
    assert back.returncode == 0, back.stderr
    assert not _refused(badges, reads)
    assert not _refused(badges, marks)
