"""The harness's PostgreSQL is a real server: commits persist, rollbacks leave nothing."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import unique
from tide_dev import Brokers


@pytest.fixture
def table(brokers: Brokers) -> str:
    name = unique("smoke").replace("-", "_")
    with psycopg.connect(brokers.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, note text NOT NULL)")
    return name


def test_committed_transaction_is_visible_to_a_new_connection(brokers: Brokers, table: str) -> None:
    with psycopg.connect(brokers.postgres_dsn) as conn, conn.transaction():
        conn.execute(f"INSERT INTO {table} VALUES (1, 'kept')")  # noqa: S608 - test-made name

    with psycopg.connect(brokers.postgres_dsn) as other:
        rows = other.execute(f"SELECT id, note FROM {table}").fetchall()  # noqa: S608
    assert rows == [(1, "kept")]


def test_rolled_back_transaction_leaves_no_row(brokers: Brokers, table: str) -> None:
    def insert_twice() -> None:
        with psycopg.connect(brokers.postgres_dsn) as conn, conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (1, 'first')")  # noqa: S608
            conn.execute(f"INSERT INTO {table} VALUES (1, 'duplicate')")  # noqa: S608

    with pytest.raises(psycopg.errors.UniqueViolation):
        insert_twice()

    with psycopg.connect(brokers.postgres_dsn) as other:
        count = other.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    assert count == (0,)
