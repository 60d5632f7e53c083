"""`tide:operators: external`: Tide installs no upstream operator and checks the CRDs it needs."""

from __future__ import annotations

import json

import pytest
from infra import outputs
from infra.components.upstream import (
    CERT_MANAGER_APIS,
    CLOUDNATIVE_PG_APIS,
    KEDA_APIS,
    PROMETHEUS_APIS,
    RABBITMQ_APIS,
    STRIMZI_APIS,
    UpstreamApi,
    unserved,
)
from infra.config import parse

from ott.catalog import CATALOG
from tests.unit.infra.program import KEYS_AUTH, Program, run, stack_config

_UPSTREAM_TYPES = ("kubernetes:helm.sh/v4:Chart", "kubernetes:yaml/v2:ConfigFile")


def _external(stack: str) -> Program:
    return run(stack, stack_config(stack) | {"tide:operators": "external"})


@pytest.fixture(scope="module", params=["kind", "cloud"])
def external(request: pytest.FixtureRequest) -> Program:
    return _external(request.param)


def test_installing_the_operators_stays_the_default() -> None:
    assert parse({"flavor": "kind", "auth": KEYS_AUTH}).operators == "install"


def test_with_external_operators_tide_installs_no_upstream_chart_or_manifest(
    external: Program,
) -> None:
    upstream = [
        r.name
        for r in external.resources
        if r.type in _UPSTREAM_TYPES and "args" not in r.inputs.get("values", {})
    ]
    assert upstream == []
    # Only Tide's own chart, once per catalog service.
    charts = {r.name for r in external.of_type("helm.sh/v4:Chart")}
    assert charts == {s.name for s in CATALOG.services}


def test_every_crd_tide_writes_objects_of_is_read_from_the_cluster(external: Program) -> None:
    read = {r.read for r in external.of_type(":CustomResourceDefinition") if r.read}
    needed = {
        api.crd
        for apis in (STRIMZI_APIS, CLOUDNATIVE_PG_APIS, RABBITMQ_APIS, KEDA_APIS, PROMETHEUS_APIS)
        for api in apis
    }
    if external.stack == "cloud":  # TLS: cert-manager signs the listener
        needed |= {api.crd for api in CERT_MANAGER_APIS}
    assert read == needed
    # And every custom resource the program writes is of one of them.
    written = {
        r.type.split(":")[1].rsplit("/", 1)[0]
        for r in external.resources
        if r.type.startswith("kubernetes:") and r.read is None
    }
    custom = {group for group in written if "." in group and not group.endswith(("k8s.io", ".sh"))}
    custom |= {"keda.sh"} & written
    assert custom <= {crd.split(".", 1)[1] for crd in needed}, custom


def test_custom_resources_wait_for_the_check_of_their_crds(external: Program) -> None:
    checked_by = {"KafkaUser": "kafka", ":Kafka": "strimzi", "KafkaTopic": "kafka"}
    checked_by |= {"RabbitmqCluster": "rabbitmq-operator", ":Cluster": "postgres-operator"}
    checked_by |= {"PrometheusRule": "tide-monitoring", "PodMonitor": "tide-monitoring"}
    for kind, check in checked_by.items():
        for resource in external.of_type(kind):
            assert check in external.waits_for(resource), f"{kind} {resource.name}"


def test_a_crd_that_does_not_serve_tides_version_fails_naming_both() -> None:
    unserved_crd = r"CustomResourceDefinition \S+ serves v1, but Tide writes \S+/v1\w+"
    with pytest.raises(Exception, match=unserved_crd):
        run("kind", stack_config("kind") | {"tide:operators": "external"}, served=("v1",))


def test_unserved_names_the_crd_and_versions() -> None:
    api = UpstreamApi("keda.sh", "v1alpha1", "scaledobjects")
    assert unserved(api, {"versions": [{"name": "v1alpha1", "served": True}]}) is None
    problem = unserved(api, {"versions": [{"name": "v1alpha1", "served": False}]})
    assert problem is not None
    assert "scaledobjects.keda.sh serves no version, but Tide writes keda.sh/v1alpha1" in problem


def test_external_monitoring_exports_no_grafana_or_prometheus_of_tides() -> None:
    config = parse(
        json.loads(json.dumps({"flavor": "kind", "operators": "external", "auth": KEYS_AUTH}))
    )
    urls = outputs.endpoint_urls(config, {"apps": "a", "monitoring": "m"}, CATALOG)
    assert set(urls) == {outputs.API_URL}


def test_with_external_operators_nothing_is_created_before_every_crd_is_checked(
    external: Program,
) -> None:
    checks = {r.name for r in external.of_type(":Operator")}
    assert checks >= {"strimzi", "postgres-operator", "rabbitmq-operator", "keda"}
    # Every object lives in a namespace that waits for every check, or waits for one itself.
    for namespace in external.of_type("core/v1:Namespace"):
        assert checks <= external.waits_for(namespace), namespace.name
