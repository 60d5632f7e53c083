"""Each service's PostgreSQL role, and exactly the privileges its code uses.

A service connects as a role named after it. What the role may touch follows from what the
process is (`tide.needs`): every consumer group and queue worker records its exactly-once
marks (`tide.store.processed`), and a row policy (migration 6) shows it only its own
groups' and queues' marks; an API that keeps state has the event store, its outbox and
its projections' checkpoints (`tide.store.event_store`, `.outbox`, `.projections`). On
top come the tables the catalog says its handlers own, with the privileges it lists for
each (read and write for a table named alone). Nothing
else: no other service's tables, and no DDL; the schema belongs to the owner, who runs the
migrations. The statements below are what the code runs, privilege by privilege.

A service that leaves the catalog loses all of it at the next grant: each platform (known
by its catalog's `schemas` package) records the roles it grants (migration 7), so several
platforms may share one database without taking each other's roles away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from tide.errors import pg_conninfo
from tide.needs import Dependency, ProcessKind, kind_of, process_needs
from tide.topology import READ_WRITE as TABLE_READ_WRITE
from tide.topology import Catalog, TablePrivilege
from tide.waiting import wait_until

SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"


def sql_privileges(allowed: tuple[TablePrivilege, ...]) -> tuple[str, ...]:
    """The catalog's privilege names as GRANT spells them."""
    return tuple(p.upper() for p in allowed)


# A table named alone in the catalog: one list for both, in the catalog's spelling.
READ_WRITE = sql_privileges(TABLE_READ_WRITE)

# INSERT ... ON CONFLICT DO NOTHING RETURNING event_id (SELECT for RETURNING); retention
# deletes old marks. The row policy on processed_events reads whose consumer a row is.
PROCESSED_MARKS: Mapping[str, tuple[str, ...]] = {
    "processed_events": (SELECT, INSERT, DELETE),
    "processed_event_owners": (SELECT,),
}
# Appends and reads events; upserts snapshots; the relay locks outbox rows (FOR UPDATE needs
# UPDATE), deletes what it published and sets aside what it cannot; a projection keeps its
# checkpoint and may reset it.
EVENT_STORE: Mapping[str, tuple[str, ...]] = {
    "events": (SELECT, INSERT),
    "snapshots": (SELECT, INSERT, UPDATE),
    "outbox": (SELECT, INSERT, UPDATE, DELETE),
    "outbox_dead_letters": (SELECT, INSERT, DELETE),
    "projection_checkpoints": READ_WRITE,
}
# The sequences a table's serial columns draw from on INSERT (events.position, outbox.id, and
# any of a platform's own tables): those the table owns ('a'). An identity column's needs
# no privilege of the inserting role.
OWNED_SEQUENCES = """
    SELECT t.relname, s.relname FROM pg_class s
    JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE s.relkind = 'S' AND n.nspname = 'public' AND t.relname = ANY(%s)
"""
GRANT_LOCK = 7_305_003  # beside tide.store.migrations' and the event store's advisory locks
PLATFORM_TABLES = frozenset(
    {
        *PROCESSED_MARKS,
        *EVENT_STORE,
        "tide_schema_migrations",
        "tide_catalog_migrations",
        "tide_granted_roles",
    }
)
# Roles a service's may not be: the schema owner's and the registry's (infra), PostgreSQL's
# own, and CloudNativePG's reserved ones. (`pg_` names are PostgreSQL's too, but a service
# name is a Kubernetes name, which has no `_`.)
RESERVED_ROLES = frozenset({"tide", "registry", "postgres", "public", "streaming_replica"})


def role_name(service: str) -> str:
    """The PostgreSQL role a service connects as. ValueError for a reserved name."""
    if service in RESERVED_ROLES:
        raise ValueError(
            f"service {service!r}: its PostgreSQL role would be reserved name {service!r};"
            " rename the service"
        )
    return service


def database_services(catalog: Catalog) -> tuple[str, ...]:
    """The catalog's services that connect to PostgreSQL, in catalog order."""
    return tuple(
        s.name
        for s in catalog.services
        if Dependency.POSTGRES in process_needs(catalog, s.name).dependencies
    )


def privileges(catalog: Catalog, service: str) -> dict[str, tuple[str, ...]]:
    """Table -> the privileges `service`'s role is granted on it. ValueError when the catalog
    gives a service one of the platform's own tables, or its role would be a reserved one."""
    entry = catalog.service(service)
    if Dependency.POSTGRES not in process_needs(catalog, service).dependencies:
        return {}
    role_name(service)
    tables = entry.table_privileges()
    taken = sorted(PLATFORM_TABLES & set(tables))
    if taken:
        raise ValueError(f"service {service!r}: tables {taken} are the platform's own")
    granted: dict[str, tuple[str, ...]] = {}
    if kind_of(catalog, service) is ProcessKind.API:
        if entry.database:
            granted |= EVENT_STORE
    else:
        granted |= PROCESSED_MARKS
    granted |= {table: sql_privileges(allowed) for table, allowed in tables.items()}
    return granted


def missing_roles(conn: psycopg.Connection[Any], roles: Iterable[str]) -> list[str]:
    """Those of `roles` that do not exist in the cluster."""
    wanted = list(roles)
    found = {
        row[0]
        for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))
    }
    return [role for role in wanted if role not in found]


def grant(conn: psycopg.Connection[Any], catalog: Catalog) -> dict[str, dict[str, tuple[str, ...]]]:
    """Give each database service's role (which must exist) exactly its privileges, taking
    away any others, in one transaction (run as the schema's owner, after the migrations).
    A role this platform granted before whose service has left the catalog loses all of
    them. Returns what each role was granted, nothing for such a role. LookupError naming
    a listed table that no migration made."""
    planned = {role_name(s): privileges(catalog, s) for s in database_services(catalog)}
    wanted = {table for tables in planned.values() for table in tables}
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)",
            (sorted(wanted),),
        )
    }
    sequences: dict[str, list[str]] = {}
    for table, sequence in conn.execute(OWNED_SEQUENCES, (sorted(wanted),)):
        sequences.setdefault(table, []).append(sequence)
    if wanted - existing:
        raise LookupError(
            f"no table {', '.join(map(repr, sorted(wanted - existing)))} in the database:"
            " the catalog lists it in a service's `tables`, and no migration made it (a"
            " platform's own tables are made by the SQL files of its catalog's `migrations`)"
        )
    with conn.transaction():
        # Two migrate Jobs (an upgrade beside a retry) grant one after the other.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (GRANT_LOCK,))
        # PostgreSQL before 15 lets every role create in `public`, and every version lets
        # every role make temporary tables; the schema is the owner's.
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(conn.info.dbname)
            )
        )
        departed = _forget_departed(conn, catalog.schemas, planned)
        for name, tables in planned.items():
            role = sql.Identifier(name)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
            _revoke_tables(conn, role)
            for table, allowed in tables.items():
                conn.execute(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(", ").join(map(sql.SQL, allowed)), sql.Identifier(table), role
                    )
                )
                if INSERT not in allowed:
                    continue
                for sequence in sequences.get(table, []):
                    conn.execute(
                        sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(
                            sql.Identifier(sequence), role
                        )
                    )
        # Other copies of a catalog (isolated names) keep their rows: each grant adds its own.
        owned = [
            (consumer, role_name(service))
            for service in database_services(catalog)
            for consumer in catalog.consumers_of(service)
        ]
        if owned:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO processed_event_owners (consumer, role) VALUES (%s, %s)"
                    " ON CONFLICT (consumer) DO UPDATE SET role = EXCLUDED.role",
                    owned,
                )
        # Only now that each role owns its marks (and may read who owns what) does the row
        # policy of migration 6 bind: from then on a role sees its own marks alone.
        conn.execute("ALTER TABLE processed_events ENABLE ROW LEVEL SECURITY")
    return planned | {role: {} for role in departed}


def _revoke_tables(conn: psycopg.Connection[Any], role: sql.Identifier) -> None:
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
    conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role))


def _forget_departed(
    conn: psycopg.Connection[Any], platform: str, planned: Mapping[str, object]
) -> list[str]:
    """Take every privilege from the roles `platform` granted before and grants no more
    (their services left its catalog), and record the ones it grants now. A role another
    platform in this database still grants keeps what that one gives it. Returns the roles
    that lost their privileges."""
    recorded = [
        row[0]
        for row in conn.execute(
            "SELECT role FROM tide_granted_roles WHERE platform = %s ORDER BY role", (platform,)
        )
    ]
    gone = [role for role in recorded if role not in planned]
    departed = [
        row[0]
        for row in conn.execute(
            "SELECT rolname FROM pg_roles r WHERE rolname = ANY(%s) AND NOT EXISTS ("
            " SELECT FROM tide_granted_roles g WHERE g.role = r.rolname AND g.platform <> %s)"
            " ORDER BY rolname",
            (gone, platform),
        )
    ]
    for name in departed:
        role = sql.Identifier(name)
        _revoke_tables(conn, role)
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM {}").format(role))
        conn.execute("DELETE FROM processed_event_owners WHERE role = %s", (name,))
    conn.execute(
        "DELETE FROM tide_granted_roles WHERE platform = %s AND role = ANY(%s)", (platform, gone)
    )
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tide_granted_roles (platform, role) VALUES (%s, %s)"
            " ON CONFLICT DO NOTHING",
            [(platform, role) for role in planned],
        )
    return departed


def grant_when_roles_exist(
    dsn: str, catalog: Catalog, *, timeout: float
) -> dict[str, dict[str, tuple[str, ...]]]:
    """`grant`, once every database service's role exists. CloudNativePG makes managed roles
    after the cluster is Ready, so the migrate Job may start first. TimeoutError naming the
    roles still missing at the deadline."""
    roles = [role_name(s) for s in database_services(catalog)]
    with psycopg.connect(pg_conninfo(dsn), autocommit=True) as conn:
        absent: list[str] = []

        def all_present() -> bool:
            absent[:] = missing_roles(conn, roles)
            return not absent

        try:
            wait_until(all_present, timeout=timeout, interval=1.0, what="the services' roles")
        except TimeoutError:
            raise TimeoutError(
                f"PostgreSQL has no role {', '.join(map(repr, absent))} after {timeout:.0f} s"
                " (on Kubernetes, CloudNativePG makes them from the Cluster's managed roles)"
            ) from None
        return grant(conn, catalog)
