"""The set of brokers a test session uses: each taken from `TIDE_*` or started on this machine."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from tide_dev.errors import HarnessError
from tide_dev.kafka import KafkaBroker
from tide_dev.postgres import PostgresServer
from tide_dev.rabbitmq import RabbitMQServer

# The variables a user sets to run the suites against brokers they already have.
ENV_KAFKA = "TIDE_KAFKA_BOOTSTRAP"
ENV_RABBITMQ = "TIDE_RABBITMQ_URL"
ENV_POSTGRES = "TIDE_POSTGRES_DSN"
ENV_REGISTRY = "TIDE_SCHEMA_REGISTRY_URL"


class Server(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Brokers:
    """Where each broker answers. What tests and services are configured with.

    `schema_registry_url` is empty when no registry was given in the environment.
    """

    kafka_bootstrap: str
    rabbitmq_url: str
    postgres_dsn: str
    schema_registry_url: str

    def as_env(self) -> dict[str, str]:
        env = {
            ENV_KAFKA: self.kafka_bootstrap,
            ENV_RABBITMQ: self.rabbitmq_url,
            ENV_POSTGRES: self.postgres_dsn,
        }
        if self.schema_registry_url:
            env[ENV_REGISTRY] = self.schema_registry_url
        return env


def broker_dir() -> Path:
    """A fresh directory for brokers' data and logs, traversable by the servers' own users."""
    root = Path(tempfile.mkdtemp(prefix="tide-brokers-"))
    # PostgreSQL runs as its own user when we are root; it must reach its data below.
    root.chmod(0o755)
    return root


@dataclass
class BrokerSession:
    """Starts the brokers the environment does not name, in parallel; stops them at close."""

    root: Path = field(default_factory=broker_dir)
    kafka: KafkaBroker | None = None
    rabbitmq: RabbitMQServer | None = None
    postgres: PostgresServer | None = None

    def open(self) -> Brokers:
        started: list[Server] = []
        if not os.environ.get(ENV_KAFKA):
            self.kafka = KafkaBroker(self.root / "kafka")
            started.append(self.kafka)
        if not os.environ.get(ENV_RABBITMQ):
            self.rabbitmq = RabbitMQServer(self.root / "rabbitmq")
            started.append(self.rabbitmq)
        if not os.environ.get(ENV_POSTGRES):
            self.postgres = PostgresServer(self.root / "postgres")
            started.append(self.postgres)
        # Each start is mostly waiting on a JVM or an Erlang VM: overlap them.
        with ThreadPoolExecutor(max_workers=max(len(started), 1)) as pool:
            futures = [pool.submit(server.start) for server in started]
            errors = [exc for f in futures if (exc := f.exception()) is not None]
        if errors:
            self.close(keep_logs=True)
            raise errors[0]
        return Brokers(
            kafka_bootstrap=os.environ.get(ENV_KAFKA) or _require(self.kafka).bootstrap,
            rabbitmq_url=os.environ.get(ENV_RABBITMQ) or _require(self.rabbitmq).url,
            postgres_dsn=os.environ.get(ENV_POSTGRES) or _require(self.postgres).dsn,
            # No Confluent-compatible registry can be installed from the package
            # registries this harness may use (see README, "Schema registry"), so it
            # is only ever the one the environment names.
            schema_registry_url=os.environ.get(ENV_REGISTRY, ""),
        )

    def own_rabbitmq(self, why: str) -> RabbitMQServer:
        """The RabbitMQ node this session started; HarnessError saying `why` it must be
        ours when the environment named another."""
        if self.rabbitmq is None:
            raise HarnessError("RabbitMQ", reason=why, fix=f"unset {ENV_RABBITMQ}")
        return self.rabbitmq

    def own_postgres(self, why: str) -> PostgresServer:
        """The PostgreSQL this session started; HarnessError saying `why` it must be ours
        when the environment named another."""
        if self.postgres is None:
            raise HarnessError("PostgreSQL", reason=why, fix=f"unset {ENV_POSTGRES}")
        return self.postgres

    def close(self, *, keep_logs: bool = False) -> None:
        """Stop what this session started; keep its directory (logs) when asked."""
        if self.rabbitmq is not None:
            self.rabbitmq.close()
        if self.postgres is not None:
            self.postgres.stop()
        if self.kafka is not None:
            self.kafka.stop()
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)


T = TypeVar("T")


def _require(server: T | None) -> T:
    assert server is not None
    return server
