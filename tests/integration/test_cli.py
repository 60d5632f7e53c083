"""The `tide` command against real brokers: preparing topics and the database, clear refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.cli import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, app
from tide_dev import Brokers
from tide_dev.cli import app as dev_app
from tide_dev.ports import free_port

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
        (
            ["tide", "run", "recomendation"],
            {},
            EXIT_USAGE,
            "unknown service 'recomendation'; known:",
        ),
        (["tide", "run"], {}, EXIT_USAGE, "name a service; known: video-service"),
        (
            ["tide", "run", "personalization"],
            {"TIDE_KAFKA_BOOTSTRAP": ""},
            EXIT_CONFIG,
            "set TIDE_KAFKA_BOOTSTRAP",
        ),
        (
            ["tide", "db", "migrate"],
            {"TIDE_POSTGRES_DSN": ""},
            EXIT_CONFIG,
            "set TIDE_POSTGRES_DSN",
        ),
        (
            ["tide", "db", "migrate"],
            {"TIDE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            EXIT_CONFIG,
            "needs TIDE_KAFKA_USERNAME",
        ),
        # A DSN that cannot parse is configuration: before, a consumer started and
        # dead-lettered every record as `exhausted`.
        (
            ["tide", "run", "personalization"],
            {"TIDE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "TIDE_POSTGRES_DSN": "not a dsn"},
            EXIT_CONFIG,
            'TIDE_POSTGRES_DSN is not a PostgreSQL DSN: missing "=" after "not"',
        ),
        (
            ["tide", "db", "migrate"],
            {"TIDE_LOG_LEVEL": "LOUD"},
            EXIT_CONFIG,
            "TIDE_LOG_LEVEL='LOUD' is not",
        ),
        (
            ["tide", "db", "migrate"],
            {"TIDE_HTTP_PORT": "eighty"},
            EXIT_CONFIG,
            "TIDE_HTTP_PORT: Input",
        ),
        (
            ["tide-dev", "chaos", "unplug-kafka"],
            {},
            EXIT_USAGE,
            "unknown experiment 'unplug-kafka'; known:",
        ),
        (
            ["tide-dev", "chaos", "restart-kafka"],
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
            ["tide-dev", "kafka-exporter"],
            {"TIDE_KAFKA_BOOTSTRAP": ""},
            EXIT_CONFIG,
            "set TIDE_KAFKA_BOOTSTRAP",
        ),
    ],
)
def test_bad_arguments_and_missing_config_exit_non_zero_naming_the_problem(
    args: list[str], env: dict[str, str], code: int, says: str
) -> None:
    command, *rest = args
    result = runner.invoke({"tide": app, "tide-dev": dev_app}[command], rest, env=env)
    assert result.exit_code == code, result.output
    assert says in " ".join(result.output.split())


def test_the_service_image_command_has_no_local_tools() -> None:
    # Supervising, lag exporting and chaos are tide-dev's: the image does not carry them.
    for tool in (["run", "--all"], ["chaos", "kill-group"], ["kafka-exporter"]):
        result = runner.invoke(app, tool)
        assert result.exit_code == EXIT_USAGE, (tool, result.output)


def _tide(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The `tide` command as a user runs it (its entry point, not the Typer app), with no
    TIDE_* setting but the catalog, which every command that dials a broker needs first."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("TIDE_") or k == "TIDE_CATALOG_FILE"
    }
    return subprocess.run(
        [sys.executable, "-m", "tide", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _lines(stderr: str) -> list[str]:
    """What the command said, without librdkafka's own connection log lines."""
    return [line for line in stderr.splitlines() if line and not line.startswith("%")]


@pytest.mark.parametrize("args", [["topics", "create"], ["status"], ["dlq", "ls"]], ids=" ".join)
def test_kafka_unreachable_is_one_line_and_exit_4(
    args: list[str],
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    result = _tide(args, {"TIDE_KAFKA_BOOTSTRAP": closed})
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    (line,) = _lines(result.stderr)
    assert line.startswith(f"error: Kafka at {closed}"), line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [["run", "badges"], ["status"], ["topics", "create"]], ids=" ".join
)
def test_no_catalog_is_one_line_and_exit_3_naming_the_variable(args: list[str]) -> None:
    # The runtime has no platform of its own: without a catalog it names the setting
    # before it dials anything (the closed port would otherwise be the error).
    closed = f"127.0.0.1:{free_port()}"
    result = _tide(args, {"TIDE_CATALOG_FILE": "", "TIDE_KAFKA_BOOTSTRAP": closed})
    assert result.returncode == EXIT_CONFIG, result.stderr
    (line,) = _lines(result.stderr)
    assert "set TIDE_CATALOG_FILE to your platform's catalog file" in line, line


def test_debug_shows_the_traceback_instead() -> None:
    closed = f"127.0.0.1:{free_port()}"
    result = _tide(["--debug", "topics", "create"], {"TIDE_KAFKA_BOOTSTRAP": closed})
    assert result.returncode == 1
    assert "Traceback" in result.stderr


@pytest.mark.parametrize(
    "dsn_of",
    [
        lambda dsn: dsn.replace(dsn.split(":")[2].split("@")[0], "wrong-password"),
        lambda _dsn: f"postgresql://tide@127.0.0.1:{free_port()}/tide",
    ],
    ids=["wrong password", "closed port"],
)
def test_db_migrate_that_cannot_reach_postgresql_is_one_line_and_exit_4(
    database: str, dsn_of: Callable[[str], str]
) -> None:
    result = _tide(["db", "migrate"], {"TIDE_POSTGRES_DSN": dsn_of(database)})
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    (line,) = _lines(result.stderr)
    assert line.startswith("error: cannot reach PostgreSQL at 127.0.0.1:"), line


def test_a_service_whose_http_port_is_taken_exits_3_naming_it(brokers: Brokers) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _tide(["run", "analytics"], {**brokers.as_env(), "TIDE_HTTP_PORT": str(port)})
    assert result.returncode == EXIT_CONFIG, result.stderr
    (line,) = _lines(result.stderr)[-1:]
    assert f"cannot listen on 0.0.0.0:{port} (TIDE_HTTP_PORT)" in line, result.stderr


def test_errors_print_as_plain_text_not_terminal_markup() -> None:
    # Rich took `[a-z0-9-]` for markup: "String should match pattern '^{0,20}$'".
    result = _tide(["topics", "create"], {"TIDE_CATALOG_SUFFIX": "UPPER"})
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "[a-z0-9-]" in result.stderr, result.stderr


def test_a_worker_whose_queue_is_not_declared_exits_3_naming_it(
    brokers: Brokers, database: str
) -> None:
    # The queue of a private catalog copy was never declared: a restart cannot mend that.
    env = {**brokers.as_env(), "TIDE_CATALOG_SUFFIX": unique("nq")}
    env["TIDE_HTTP_PORT"] = str(free_port())
    env["TIDE_POSTGRES_DSN"] = database
    result = _tide(["run", "notification-worker"], env)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "is not declared on RabbitMQ at 127.0.0.1:" in result.stderr, result.stderr


def test_rabbitmq_refusing_a_worker_names_rabbitmq(brokers: Brokers, database: str) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    env = {**brokers.as_env(), "TIDE_RABBITMQ_URL": closed, "TIDE_POSTGRES_DSN": database}
    env["TIDE_HTTP_PORT"] = str(free_port())
    result = _tide(["run", "notification-worker"], env)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    (line,) = [line for line in _lines(result.stderr) if line.startswith("error:")]
    assert line.startswith(f"error: RabbitMQ at 127.0.0.1:{closed.split(':')[3]}"), line
    assert "guest" not in line, "credentials are not printed"
