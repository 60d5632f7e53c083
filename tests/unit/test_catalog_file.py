"""A catalog file: the reference platform is one, a team's own loads the same way, and every
error names the file, the entry and the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from ott.catalog import CATALOG, REFERENCE_CATALOG
from tide.catalog_file import CatalogFileError, json_schema, load_catalog
from tide.cli import app

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_SCHEMA = ROOT / "schemas" / "catalog.schema.json"
# A platform that is not the reference one: one API, two groups, one queue worker.
ORDERS = """
kind: tide.catalog/v1
schemas: orders.schemas
topics:
  - {name: orders, partitions: 3, retention_ms: 86400000}
services:
  - {name: orders-api, role: api, produces: [orders], app: "orders.api:app"}
  - {name: billing, role: consumer}
  - {name: shipping, role: consumer, publishes_to_exchanges: [parcels]}
  - {name: courier, role: worker}
consumer_groups:
  - {name: billing, service: billing, topics: [orders], handler: "orders.billing:handle",
     autoscaling: {max_replicas: 3}}
  - {name: shipping, service: shipping, topics: [orders], handler: "orders.shipping:handle",
     autoscaling: {min_replicas: 0, max_replicas: 2}}
exchanges: [{name: parcels}]
queues: [{name: parcels}]
bindings: [{exchange: parcels, queue: parcels}]
queue_workers:
  - {service: courier, queue: parcels, handler: "orders.courier:handle",
     autoscaling: {max_replicas: 4}}
events:
  - {type: order.placed, topic: orders, key: order_id}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(CatalogFileError) as caught:
        load_catalog(path)
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value.problems


def test_a_teams_own_platform_loads_and_derives_its_retry_topics_and_dlqs(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, ORDERS))
    assert catalog.group("billing").dlq_topic == "billing.dlq"
    assert catalog.group("shipping").retry_topics == (
        "shipping.retry.1s", "shipping.retry.10s", "shipping.retry.60s")  # fmt: skip
    assert catalog.queue_workers[0].queue == "parcels"
    assert "orders" not in {t.name for t in CATALOG.topics}


def test_a_field_error_names_the_file_the_entry_and_the_field(tmp_path: Path) -> None:
    text = ORDERS.replace("partitions: 3", "partitions: none")
    assert _problems(_write(tmp_path, text)) == [
        "topics[orders].partitions: Input should be a valid integer, unable to parse string "
        "as an integer"
    ]


def test_a_misspelt_field_is_refused_by_name(tmp_path: Path) -> None:
    text = ORDERS.replace("autoscaling: {max_replicas: 4}", "autoscaling: {max_replica: 4}")
    problems = _problems(_write(tmp_path, text))
    assert "queue_workers[courier].autoscaling.max_replicas: Field required" in problems
    assert "queue_workers[courier].autoscaling.max_replica: Extra inputs are not permitted" in (
        problems
    )


def test_an_entry_rule_names_its_entry(tmp_path: Path) -> None:
    text = ORDERS.replace('"orders.billing:handle"', '"billing"')
    assert _problems(_write(tmp_path, text)) == [
        "consumer_groups[billing]: handler 'billing' must look like 'package.module:function'"
    ]


def test_rules_across_entries_are_one_line_each_naming_their_entries(tmp_path: Path) -> None:
    text = ORDERS.replace("max_replicas: 3}", "max_replicas: 9}").replace(
        'topics: [orders], handler: "orders.shipping', 'topics: [order], handler: "orders.shipping'
    )
    assert _problems(_write(tmp_path, text)) == [
        "consumer group 'billing': max_replicas 9 exceeds the 3 partitions of topic 'orders' "
        "(replicas beyond the partition count would sit idle)",
        "consumer group 'shipping': topic 'order' is not in the catalog",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("topics: [\n", "line 2, column 1: not valid YAML"),
        ("- just a list\n", "must be a mapping of sections"),
        ("", "must be a mapping of sections"),
        ("topics: \x01\n", "not valid YAML: unacceptable character #x0001"),
    ],
)
def test_a_file_that_is_not_a_catalog_says_so(tmp_path: Path, text: str, expected: str) -> None:
    (problem,) = _problems(_write(tmp_path, text))
    assert problem.startswith(expected), problem


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert _problems(tmp_path / "absent.yaml") == ["no such file"]


def test_the_published_json_schema_is_the_models_and_accepts_both_platforms() -> None:
    assert PUBLISHED_SCHEMA.read_text() == json_schema(), (
        "schemas/catalog.schema.json is stale: run `tide catalog schema > "
        "schemas/catalog.schema.json`"
    )
    schema = json.loads(PUBLISHED_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for document in (yaml.safe_load(REFERENCE_CATALOG.read_text()), yaml.safe_load(ORDERS)):
        jsonschema.Draft202012Validator(schema).validate(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({"topics": [{"name": "t"}]})


def test_tide_catalog_check_prints_what_a_file_declares_or_every_problem(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["catalog", "check", str(_write(tmp_path, ORDERS))])
    assert good.exit_code == 0, good.output
    said = " ".join(good.output.split())
    assert "1 topic, 4 services, 2 consumer groups (8 retry and DLQ topics)" in said
    assert "1 queue, 1 queue worker," in said
    bad = tmp_path / "bad.yaml"
    bad.write_text(ORDERS.replace("max_replicas: 3", "max_replicas: 9"))
    refused = runner.invoke(app, ["catalog", "check", str(bad)])
    assert refused.exit_code == 3
    assert refused.output.startswith(
        f"error: {bad}: consumer group 'billing': max_replicas 9 exceeds the 3 partitions"
    )
