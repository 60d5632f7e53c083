"""prometheus-operator, given the Prometheus that kube-prometheus-stack renders from Tide's
values, generates a configuration that scrapes every Tide monitor and loads every Tide
rule group; promtool accepts what it generated.

The chart itself cannot be fetched here, so its `Prometheus` is written from the chart's
template (templates/prometheus/prometheus.yaml at 77.6.2) applied to Tide's own values
(`PROMETHEUS_SPEC`): a value that narrowed a selector would narrow it here too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra.components.monitoring import PROMETHEUS_SPEC, RELEASE

from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import Deployed
from tests.harness.cluster import Cluster
from tests.harness.prometheus_operator import Generated, PrometheusOperator, promtool
from tests.reports import ENGINE, report

pytestmark = pytest.mark.timeout(600)
MONITORING = "monitoring.coreos.com/v1"
PROMETHEUS = f"{RELEASE}-prometheus"  # the chart's <fullname>-prometheus


def _selector(kind: str) -> dict[str, Any]:
    """The chart's rendering of `<kind>Selector`; its values.yaml defaults every
    `*SelectorNilUsesHelmValues` to true, which selects only the release's own objects."""
    given = PROMETHEUS_SPEC.get(f"{kind}Selector")
    if isinstance(given, dict) and given:
        return given
    if PROMETHEUS_SPEC.get(f"{kind}SelectorNilUsesHelmValues", True):
        return {"matchLabels": {"release": RELEASE}}
    return {}


def _prometheus(namespace: str) -> dict[str, Any]:
    kinds = ("serviceMonitor", "podMonitor", "rule", "probe", "scrapeConfig")
    return {
        "apiVersion": MONITORING,
        "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS, "namespace": namespace},
        "spec": {
            **{f"{kind}Selector": _selector(kind) for kind in kinds},
            **{f"{kind}NamespaceSelector": {} for kind in kinds},
            "retention": PROMETHEUS_SPEC["retention"],
            "serviceAccountName": PROMETHEUS,
            "portName": "http-web",
            "replicas": 1,
        },
    }


def _tide_objects(api: ApiServer, kind: str, prefix: str) -> list[dict[str, Any]]:
    resource = api.client.resources.get(api_version=MONITORING, kind=kind)
    return [
        item.to_dict()
        for item in resource.get().items
        if item.metadata.namespace.startswith(f"{prefix}-")
    ]


@pytest.fixture(scope="module")
def generated(
    cluster: Cluster, cluster_api: ApiServer, engine_dir: Path, operated_stack: Deployed
) -> Iterator[tuple[Generated, list[str]]]:
    """What the operator wrote for the chart's Prometheus, and the objects it made."""
    operator = PrometheusOperator(engine_dir / "prometheus-operator", kubeconfig=cluster.kubeconfig)
    rejected = cluster_api.apply_all(operator.manifests())
    assert not rejected, "prometheus-operator's manifests refused:\n" + "\n".join(
        map(str, rejected)
    )
    operator.start()
    try:
        namespace = operated_stack.monitoring
        account = {"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": PROMETHEUS, "namespace": namespace}}  # fmt: skip
        for document in (account, _prometheus(namespace)):
            assert cluster_api.apply(document) is None
        found = operator.generated(namespace, PROMETHEUS)
        made = sorted(
            f"{item.kind} {item.metadata.name}"
            for kind in ("Secret", "ConfigMap", "StatefulSet", "Service")
            for item in cluster_api.client.resources.get(
                api_version="apps/v1" if kind == "StatefulSet" else "v1", kind=kind
            )
            .get(namespace=namespace)
            .items
            if any(o.kind == "Prometheus" for o in item.metadata.ownerReferences or [])
        )
        yield found, made
    finally:
        operator.stop()


def test_every_tide_monitor_has_a_scrape_job_in_the_generated_configuration(
    cluster_api: ApiServer, operated_stack: Deployed, generated: tuple[Generated, list[str]]
) -> None:
    found, made = generated
    config = yaml.safe_load(found.config)
    jobs = {job["job_name"] for job in config.get("scrape_configs") or []}
    expected = set()
    for kind, prefix, endpoints in (
        ("ServiceMonitor", "serviceMonitor", "endpoints"),
        ("PodMonitor", "podMonitor", "podMetricsEndpoints"),
    ):
        monitors = _tide_objects(cluster_api, kind, operated_stack.prefix)
        assert monitors, f"the stack has no {kind}"
        for monitor in monitors:
            metadata = monitor["metadata"]
            for index in range(len(monitor["spec"][endpoints])):
                expected.add(f"{prefix}/{metadata['namespace']}/{metadata['name']}/{index}")
    assert expected <= jobs, f"monitors without a scrape job: {sorted(expected - jobs)}"
    report(
        ENGINE,
        f"prometheus-operator: {len(expected)} scrape jobs for Tide's monitors; it made "
        + ", ".join(made),
    )


def test_every_tide_rule_group_is_in_the_generated_rule_files(
    cluster_api: ApiServer, operated_stack: Deployed, generated: tuple[Generated, list[str]]
) -> None:
    found, _ = generated
    rules = _tide_objects(cluster_api, "PrometheusRule", operated_stack.prefix)
    assert rules, "the stack has no PrometheusRule"
    wanted = {group["name"] for rule in rules for group in rule["spec"]["groups"]}
    loaded = {
        group["name"]
        for content in found.rule_files.values()
        for group in (yaml.safe_load(content) or {}).get("groups") or []
    }
    assert wanted <= loaded, f"rule groups not loaded: {sorted(wanted - loaded)}"


def test_promtool_accepts_the_generated_configuration_and_rule_files(
    generated: tuple[Generated, list[str]], tmp_path: Path
) -> None:
    found, _ = generated
    checker = promtool()
    config = tmp_path / "prometheus.yaml"
    config.write_text(found.config)
    # --syntax-only: the files it names (service account token, rule directory) exist
    # only inside the Prometheus pod.
    checks = [[checker, "check", "config", "--syntax-only", str(config)]]
    rule_files = []
    for name, content in found.rule_files.items():
        path = tmp_path / name
        path.write_text(content)
        rule_files.append(str(path))
    assert rule_files, "the operator wrote no rule file"
    checks.append([checker, "check", "rules", *rule_files])
    for check in checks:
        done = subprocess.run(check, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(check[1:3])}: {done.stdout}{done.stderr}"
