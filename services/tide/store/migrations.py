"""Tide's database schema, as numbered migrations applied once each, safely in parallel;
then the platform's own, from the catalog's `migrations` package."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from typing import Any

import psycopg

from tide.errors import pg_conninfo
from tide.topology import Catalog

# Serialises concurrent `tide db migrate` runs (several pods starting at once).
_LOCK = 7_305_001

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE events (
            position    bigserial PRIMARY KEY,
            stream_id   text        NOT NULL,
            version     integer     NOT NULL CHECK (version > 0),
            event_id    uuid        NOT NULL UNIQUE,
            type        text        NOT NULL,
            data        jsonb       NOT NULL,
            metadata    jsonb       NOT NULL DEFAULT '{}',
            recorded_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (stream_id, version)
        );
        CREATE TABLE snapshots (
            stream_id text        PRIMARY KEY,
            version   integer     NOT NULL,
            state     jsonb       NOT NULL,
            taken_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE projection_checkpoints (
            projection text        PRIMARY KEY,
            position   bigint      NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE outbox (
            id         bigserial   PRIMARY KEY,
            event_id   uuid        NOT NULL UNIQUE,
            type       text        NOT NULL,
            envelope   jsonb       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE processed_events (
            consumer     text        NOT NULL,
            event_id     text        NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );
        """,
    ),
    # 2 and 3 made the reference platform's read models. They moved to its own package
    # (ott.migrations), whose files create them IF NOT EXISTS: a database that ran 2 and 3
    # adopts them, and the numbers stay taken.
    (
        4,
        """
        -- Outbox rows that can never be published, with why; the relay goes on without them.
        CREATE TABLE outbox_dead_letters (
            id         bigint      PRIMARY KEY,
            event_id   uuid        NOT NULL,
            type       text        NOT NULL,
            envelope   jsonb       NOT NULL,
            reason     text        NOT NULL,
            failed_at  timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        5,
        """
        -- Pruning each group's processed marks past its retention (tide.store.processed).
        CREATE INDEX processed_events_consumer_age ON processed_events (consumer, processed_at);
        """,
    ),
    (
        6,
        """
        -- Whose marks a row is: a service's role sees and writes only the rows of its own
        -- consumer groups and queues. The grant (tide.store.grants) records the owners and
        -- only then turns row-level security on, so running consumers keep working from
        -- this migration to the grant. The owner, who migrates, and superusers are not
        -- bound by the policy.
        CREATE TABLE processed_event_owners (
            consumer text PRIMARY KEY,
            role     name NOT NULL
        );
        CREATE POLICY own_consumers ON processed_events
            USING (EXISTS (
                SELECT FROM processed_event_owners o
                WHERE o.consumer = processed_events.consumer AND o.role = current_user
            ));
        """,
    ),
    (
        7,
        """
        -- The roles each platform's grant gave privileges to, the platform named by its
        -- catalog's schemas package: a service that leaves the catalog loses them at the
        -- next grant (tide.store.grants), while other platforms' roles in the same
        -- database are left alone.
        CREATE TABLE tide_granted_roles (
            platform text NOT NULL,
            role     name NOT NULL,
            PRIMARY KEY (platform, role)
        );
        """,
    ),
)


# A platform's own migration file: four digits, then what it does.
CATALOG_MIGRATION = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class CatalogMigration:
    """One SQL file of a catalog's `migrations` package."""

    name: str
    text: bytes  # as the file holds it: its SHA-256 is recorded, whatever the locale

    @property
    def number(self) -> str:
        return self.name[:4]

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text).hexdigest()


def catalog_migrations(package: str) -> list[CatalogMigration]:
    """The SQL files of `package`, in order. LookupError when it cannot be imported;
    ValueError naming a file whose name is not '<NNNN>_<name>.sql', or two numbered alike."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise LookupError(
            f"catalog migrations: no Python package {package!r} (is it installed where"
            " `tide db migrate` runs?)"
        ) from None
    except TypeError:  # a module, not a package: it holds no files
        raise LookupError(
            f"catalog migrations: {package!r} is a module; name a package (a directory with"
            " __init__.py) holding the .sql files"
        ) from None
    found: dict[str, CatalogMigration] = {}  # by number
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        if not CATALOG_MIGRATION.fullmatch(entry.name):
            raise ValueError(
                f"catalog migrations: {package}/{entry.name} must be named"
                " '<NNNN>_<name>.sql' (four digits, then lower case, digits and _)"
            )
        migration = CatalogMigration(entry.name, entry.read_bytes())
        if migration.number in found:
            raise ValueError(
                f"catalog migrations: {package}/{entry.name} and"
                f" {found[migration.number].name} share number {migration.number}"
            )
        found[migration.number] = migration
    return list(found.values())


def migrate(dsn: str, catalog: Catalog | None = None) -> list[str]:
    """Apply Tide's migrations this database lacks, then those of `catalog`'s own package;
    returns what was applied now ('tide/<version>', '<package>/<file>').

    ValueError (before anything of the catalog's is applied) for an applied catalog
    migration that was edited, renamed or removed, or a new one numbered before one that is
    applied: a schema is changed only forward, by new files."""
    package = catalog.migrations if catalog is not None else None
    own = catalog_migrations(package) if package else []
    applied: list[str] = []
    with psycopg.connect(pg_conninfo(dsn), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tide_schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM tide_schema_migrations")}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # literal DDL from this module, no parameters
                    conn.execute(
                        "INSERT INTO tide_schema_migrations (version) VALUES (%s)", (version,)
                    )
                applied.append(f"tide/{version}")
            if package:
                applied += _apply_catalog_migrations(conn, package, own)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    return applied


def _apply_catalog_migrations(
    conn: psycopg.Connection[Any], package: str, migrations: list[CatalogMigration]
) -> list[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS tide_catalog_migrations ("
        " package text NOT NULL, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (package, name))"
    )
    done = dict(
        conn.execute(
            "SELECT name, checksum FROM tide_catalog_migrations WHERE package = %s", (package,)
        ).fetchall()
    )
    files = {m.number: m for m in migrations}
    for name, checksum in sorted(done.items()):
        where = f"catalog migrations: {package}/{name}"
        now = files.get(name[:4])
        if now is None:
            raise ValueError(f"{where} was applied and is gone from the package; restore it")
        if now.name != name:
            raise ValueError(f"{where} was applied and is now named {now.name}; rename it back")
        if now.checksum != checksum:
            raise ValueError(
                f"{where} was changed after it was applied; undo the change and add a new"
                " file for it"
            )
    last = max(done, default="")
    late = [m.name for m in migrations if m.name not in done and m.name < last]
    if late:
        raise ValueError(
            f"catalog migrations: {package}/{late[0]} is new but numbered before {last},"
            " which is applied; number it after"
        )
    applied = []
    for migration in migrations:
        if migration.name in done:
            continue
        with conn.transaction():
            # The platform's own DDL, from its package: run as written, in this
            # transaction (so a file may not COMMIT, nor CREATE INDEX CONCURRENTLY).
            conn.execute(migration.text)
            conn.execute(
                "INSERT INTO tide_catalog_migrations (package, name, checksum) VALUES (%s, %s, %s)",
                (package, migration.name, migration.checksum),
            )
        applied.append(f"{package}/{migration.name}")
    return applied
