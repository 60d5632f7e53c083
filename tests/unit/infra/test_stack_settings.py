"""What a stack asks for is what the program declares, read against the pinned upstream code."""

from __future__ import annotations

from typing import Any

import pytest
from infra.config import ConfigError, parse

from tests.unit.infra.program import KEYS_AUTH, Declared, Program, run, stack_config


def _one(program: Program, type_suffix: str) -> Declared:
    (found,) = program.of_type(type_suffix)
    return found


def test_rabbitmq_on_ephemeral_storage_gets_no_claim(kind: Program) -> None:
    # The kind stack leaves RabbitMQ's storage ephemeral (its default), yet got a 2Gi claim.
    spec = _one(kind, ":RabbitmqCluster").inputs["spec"]
    assert spec["persistence"] == {"storage": "0"}, "storage 0 is the operator's emptyDir"


def test_rabbitmq_on_a_persistent_claim_gets_its_size_and_class() -> None:
    config = stack_config("cloud")
    config["tide:rabbitmq"] = (
        '{"replicas": 3, "storage": {"type": "persistent-claim", "size": "20Gi",'
        ' "storageClass": "fast"}}'
    )
    spec = _one(run("cloud", config), ":RabbitmqCluster").inputs["spec"]
    assert spec["persistence"] == {"storage": "20Gi", "storageClassName": "fast"}


def test_postgres_refuses_ephemeral_storage_naming_the_key() -> None:
    with pytest.raises(ConfigError) as refused:
        parse({"flavor": "kind", "auth": KEYS_AUTH, "postgres": {"storage": {"type": "ephemeral"}}})
    message = str(refused.value)
    assert "tide:postgres.storage:" in message, message
    assert "CloudNativePG keeps its data on a persistent claim" in message, message


def test_a_postgres_size_alone_is_a_claim_of_that_size() -> None:
    # Storage's own default type is ephemeral; PostgreSQL's must not be.
    settings = parse(
        {"flavor": "kind", "auth": KEYS_AUTH, "postgres": {"storage": {"size": "5Gi"}}}
    ).postgres
    assert (settings.storage.type, settings.storage.size) == ("persistent-claim", "5Gi")


def test_the_strimzi_operator_has_no_cpu_limit(program: Program) -> None:
    # Helm merges the chart's default limits.cpu (1000m) unless the values null it.
    charts = [c for c in program.of_type(":Chart") if "strimzi" in str(c.inputs.get("chart"))]
    (chart,) = charts
    limits: dict[str, Any] = chart.props["values"]["resources"]["limits"]
    assert "cpu" in limits, "an omitted key is filled in from the chart's defaults"
    assert limits["cpu"] is None, limits
    assert limits["memory"] == "512Mi"


def test_a_cluster_acl_carries_only_its_type(program: Program) -> None:
    operator = program.named(":KafkaUser", "tide-operator-kafka-user")
    clusters = [
        acl["resource"]
        for acl in operator.inputs["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "cluster"
    ]
    assert clusters == [{"type": "cluster"}]


def test_dns_egress_is_not_limited_to_kube_system_pods(program: Program) -> None:
    # A node-local DNS cache answers on the node's own address, outside any namespace.
    for policy in program.of_type(":NetworkPolicy"):
        if policy.inputs["metadata"]["name"] != "allow-dns":
            continue
        (rule,) = policy.inputs["spec"]["egress"]
        assert "to" not in rule or not rule["to"], rule
        assert {p["port"] for p in rule["ports"]} == {53}
