"""Against a real Confluent-compatible registry (TIDE_SCHEMA_REGISTRY_URL): registration and
round trips through confluent-kafka's serializers. None can be installed here (README,
"Schema registry"), so these run only where the environment names one."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from typer.testing import CliRunner

from ott.catalog import CATALOG
from tests.conftest import unique
from tide.cli import app
from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent
from tide.events.schemas import schema_text
from tide_dev import Brokers

pytestmark = pytest.mark.registry


def test_register_sets_backward_compatibility_and_schemas_are_fetched_by_id(
    brokers: Brokers,
) -> None:
    suffix = unique("reg")
    result = CliRunner().invoke(
        app,
        ["registry", "register"],
        env={
            "TIDE_SCHEMA_REGISTRY_URL": brokers.schema_registry_url,
            "TIDE_CATALOG_SUFFIX": suffix,
        },
    )
    assert result.exit_code == 0, result.output
    client = SchemaRegistryClient({"url": brokers.schema_registry_url})
    for event in CATALOG.isolated(suffix).events:
        latest = client.get_latest_version(event.subject)
        assert client.get_schema(latest.schema_id).schema_str.replace(" ", "") == schema_text(
            event
        ).replace(" ", "")
        assert client.get_compatibility(event.subject) == "BACKWARD"


def test_registry_framed_event_round_trips(brokers: Brokers) -> None:
    catalog = CATALOG.isolated(unique("reg"))
    codec = EventCodec(catalog, os.environ["TIDE_SCHEMA_REGISTRY_URL"])
    event = CloudEvent(
        type="video.rated", source="/t", data={"user_id": "u", "video_id": "v", "rating": 3}
    )
    encoded = codec.encode(event)
    assert encoded.value[0] == 0
    assert codec.decode(encoded.topic, encoded.value, encoded.headers).data == event.data
