"""The `tide` command against real brokers: preparing topics and the database, clear refusals."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from tests.conftest import unique
from tests.harness import Brokers
from tide.catalog import CATALOG
from tide.cli import EXIT_CONFIG, EXIT_USAGE, app

runner = CliRunner()


def test_topics_create_makes_every_catalog_retry_and_dlq_topic_once(brokers: Brokers) -> None:
    suffix = unique("cli")
    env = {"TIDE_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap, "TIDE_CATALOG_SUFFIX": suffix}
    first = runner.invoke(app, ["topics", "create"], env=env)
    assert first.exit_code == 0, first.output
    names = set(CATALOG.isolated(suffix).all_topic_names())
    existing = set(
        AdminClient({"bootstrap.servers": brokers.kafka_bootstrap}).list_topics(timeout=10).topics
    )
    assert names <= existing
    again = runner.invoke(app, ["topics", "create"], env=env)
    assert again.exit_code == 0
    assert "all topics exist" in again.output


def test_db_migrate_is_idempotent(database: str) -> None:
    result = runner.invoke(app, ["db", "migrate"], env={"TIDE_POSTGRES_DSN": database})
    assert result.exit_code == 0, result.output
    assert "database is up to date" in result.output


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (["run", "recomendation"], {}, EXIT_USAGE, "unknown service 'recomendation'; known:"),
        (["run"], {}, EXIT_USAGE, "name a service or pass --all"),
        (
            ["run", "personalization"],
            {"TIDE_KAFKA_BOOTSTRAP": ""},
            EXIT_CONFIG,
            "set TIDE_KAFKA_BOOTSTRAP",
        ),
        (["db", "migrate"], {"TIDE_POSTGRES_DSN": ""}, EXIT_CONFIG, "set TIDE_POSTGRES_DSN"),
        (["chaos", "unplug-kafka"], {}, EXIT_USAGE, "unknown experiment 'unplug-kafka'; known:"),
        (
            ["chaos", "restart-kafka"],
            {
                "TIDE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                "TIDE_POSTGRES_DSN": "postgresql://nowhere",
                "TIDE_RABBITMQ_URL": "amqp://nowhere",
                "TIDE_CHAOS_CONTROL_URL": "",
            },
            EXIT_CONFIG,
            "restart-kafka stops a broker: set TIDE_CHAOS_CONTROL_URL",
        ),
        (
            ["db", "migrate"],
            {"TIDE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            EXIT_CONFIG,
            "needs TIDE_KAFKA_USERNAME",
        ),
        # A DSN that cannot parse is configuration: before, a consumer started and
        # dead-lettered every record as `exhausted`.
        (
            ["run", "personalization"],
            {"TIDE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TIDE_POSTGRES_DSN": "not a dsn"},
            EXIT_CONFIG,
            'TIDE_POSTGRES_DSN is not a PostgreSQL DSN: missing "=" after "not"',
        ),
        (
            ["db", "migrate"],
            {"TIDE_LOG_LEVEL": "LOUD"},
            EXIT_CONFIG,
            "TIDE_LOG_LEVEL='LOUD' is not",
        ),
        (["db", "migrate"], {"TIDE_HTTP_PORT": "eighty"}, EXIT_CONFIG, "TIDE_HTTP_PORT: Input"),
    ],
)
def test_bad_arguments_and_missing_config_exit_non_zero_naming_the_problem(
    args: list[str], env: dict[str, str], code: int, says: str
) -> None:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == code, result.output
    assert says in " ".join(result.output.split())
