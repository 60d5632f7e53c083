"""What every benchmark runs on: the harness's brokers and a private copy of the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ott.catalog import CATALOG
from tide.codecs.json_schema import EventCodec
from tide.kafka.topics import ensure_topics
from tide.store.migrations import migrate
from tide.topology import Catalog
from tide_dev import BrokerSession


@dataclass(frozen=True)
class Setting:
    bootstrap: str
    rabbitmq_url: str
    postgres_dsn: str
    catalog: Catalog
    codec: EventCodec
    workdir: Path
    session: BrokerSession
    env: dict[str, str]  # the TIDE_* variables that point a `tide run` at these brokers

    @property
    def client(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap}


@contextmanager
def setting(workdir: Path) -> Iterator[Setting]:
    """Brokers from the environment (`make brokers`) or started here, the schema migrated and
    the catalog's topics created under private names."""
    session = BrokerSession()
    brokers = session.open()
    try:
        catalog = CATALOG.isolated(f"bench{uuid.uuid4().hex[:6]}")
        ensure_topics({"bootstrap.servers": brokers.kafka_bootstrap}, list(catalog.all_topics()))
        migrate(brokers.postgres_dsn, catalog)
        workdir.mkdir(parents=True, exist_ok=True)
        yield Setting(
            bootstrap=brokers.kafka_bootstrap,
            rabbitmq_url=brokers.rabbitmq_url,
            postgres_dsn=brokers.postgres_dsn,
            catalog=catalog,
            codec=EventCodec(catalog),
            workdir=workdir,
            session=session,
            env=brokers.as_env(),
        )
    finally:
        session.close()
