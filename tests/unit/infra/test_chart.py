"""charts/tide-service renders what each service needs, with the values the program passes it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from infra.components.namespaces import DATA_PORTS

from ott.catalog import CATALOG
from tests.unit.infra.chart import CHART, by_kind, helm_run, render
from tests.unit.infra.program import Program
from tide.needs import process_needs
from tide.topology import Role


def _values(program: Program, service: str) -> dict[str, Any]:
    values: dict[str, Any] = program.named("helm.sh/v4:Chart", service).inputs["values"]
    return values


@pytest.mark.parametrize("values_file", ["default-values.yaml", "full-values.yaml"])
def test_chart_lints_with_default_and_full_values(values_file: str) -> None:
    result = helm_run("lint", "--strict", values=CHART / "ci" / values_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_value_fails_the_install_naming_it() -> None:
    result = helm_run("template", stdin=json.dumps({"name": "demo", "replica": 3}))
    assert result.returncode != 0
    assert "additional properties 'replica' not allowed" in result.stderr


def test_missing_name_fails_with_a_clear_message() -> None:
    result = helm_run("template", stdin=json.dumps({}))
    assert result.returncode != 0
    assert "name" in result.stderr


def test_every_deployment_is_probed_limited_and_locked_down(program: Program) -> None:
    for service in CATALOG.services:
        (deployment,) = by_kind(render(_values(program, service.name)), "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["args"] == ["tide", "run", service.name]


def test_each_consumer_group_gets_a_scaled_object_within_its_partitions(program: Program) -> None:
    for group in CATALOG.consumer_groups:
        documents = render(_values(program, group.service))
        (scaled,) = by_kind(documents, "ScaledObject")
        partitions = min(CATALOG.topic(t).partitions for t in group.topics)
        assert scaled["spec"]["maxReplicaCount"] == group.autoscaling.max_replicas <= partitions
        assert scaled["spec"]["minReplicaCount"] == group.autoscaling.min_replicas
        kafka = [t for t in scaled["spec"]["triggers"] if t["type"] == "kafka"]
        assert {t["metadata"]["topic"] for t in kafka} == set(group.topics)
        assert {t["metadata"]["consumerGroup"] for t in kafka} == {group.name}
        assert all(
            t["metadata"]["lagThreshold"] == str(group.autoscaling.lag_threshold) for t in kafka
        )
        (auth,) = by_kind(documents, "TriggerAuthentication")
        params = {p["parameter"]: (p["name"], p["key"]) for p in auth["spec"]["secretTargetRef"]}
        assert params["sasl"] == (f"{group.service}-kafka", "sasl")
        assert params["password"] == (f"{group.service}-kafka", "password")
        # KEDA owns the replica count of a scaled Deployment.
        (deployment,) = by_kind(documents, "Deployment")
        assert "replicas" not in deployment["spec"]


def test_queue_workers_scale_on_queue_length(program: Program) -> None:
    for worker in CATALOG.queue_workers:
        (scaled,) = by_kind(render(_values(program, worker.service)), "ScaledObject")
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == worker.queue


def test_api_services_have_fixed_replicas_and_no_scaled_object(program: Program) -> None:
    for service in CATALOG.services:
        if service.role is not Role.API:
            continue
        documents = render(_values(program, service.name))
        assert by_kind(documents, "ScaledObject") == []
        (deployment,) = by_kind(documents, "Deployment")
        assert deployment["spec"]["replicas"] == service.replicas


def test_network_policy_allows_only_what_the_process_needs(program: Program) -> None:
    # Under jwt (the cloud stack) an API also fetches its issuer's keys: that port only,
    # anywhere, since the issuer is outside the cluster.
    jwks = {443} if program.stack == "cloud" else set()
    for service in CATALOG.services:
        (policy,) = by_kind(render(_values(program, service.name)), "NetworkPolicy")
        egress = policy["spec"]["egress"]
        anywhere = {port["port"] for rule in egress if "to" not in rule for port in rule["ports"]}
        assert anywhere == (jwks if service.role is Role.API else set()), service.name
        ports = {port["port"] for rule in egress if "to" in rule for port in rule["ports"]}
        needs = process_needs(CATALOG, service.name).dependencies
        assert ports == {DATA_PORTS[dependency] for dependency in needs}, service.name
        for rule in (rule for rule in egress if "to" in rule):
            (peer,) = rule["to"]
            assert peer["namespaceSelector"]["matchLabels"] == {
                "kubernetes.io/metadata.name": "tide-data"
            }
        ingress = policy["spec"]["ingress"]
        # Prometheus, from its namespace, on the metrics port only; an API's own port from
        # anywhere.
        scrape = {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "tide-monitoring"}
                    }
                }
            ],
            "ports": [{"port": 9464, "protocol": "TCP"}],
        }
        if service.role is Role.API:
            assert ingress == [{"ports": [{"port": 8080, "protocol": "TCP"}]}, scrape]
        else:
            assert ingress == [scrape]


def test_metrics_are_served_apart_and_only_a_cluster_ip_service_exposes_them(
    program: Program,
) -> None:
    for service in CATALOG.services:
        documents = render(_values(program, service.name))
        (deployment,) = by_kind(documents, "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TIDE_METRICS_PORT"] == "9464"
        services = {s["metadata"]["name"]: s for s in by_kind(documents, "Service")}
        public, metrics = services[service.name], services[f"{service.name}-metrics"]
        assert [p["name"] for p in public["spec"]["ports"]] == ["http"], service.name
        assert metrics["spec"]["type"] == "ClusterIP"
        assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]
        (monitor,) = by_kind(documents, "ServiceMonitor")
        selected = monitor["spec"]["selector"]["matchLabels"]
        assert selected.items() <= metrics["metadata"]["labels"].items()
        assert not selected.items() <= public["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "metrics"
        # Series keep the catalog service's name in `service`, as the dashboards ask.
        assert endpoint["relabelings"] == [
            {
                "sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"],
                "targetLabel": "service",
            }
        ]


@pytest.mark.parametrize(
    ("switch", "kind"),
    [
        ("podDisruptionBudget", "PodDisruptionBudget"),
        ("serviceMonitor", "ServiceMonitor"),
        ("networkPolicy", "NetworkPolicy"),
    ],
)
def test_each_switch_renders_its_object_only_when_set(switch: str, kind: str) -> None:
    on = render({"name": "demo", switch: {"enabled": True}})
    off = render({"name": "demo", switch: {"enabled": False}})
    assert len(by_kind(on, kind)) == 1
    assert by_kind(off, kind) == []


def test_autoscaling_switch_renders_scaled_object_and_auth_only_when_set() -> None:
    on = render(
        {
            "name": "demo",
            "autoscaling": {
                "enabled": True,
                "maxReplicas": 2,
                "triggers": [{"type": "kafka", "metadata": {"topic": "t"}}],
                "authentication": {"secretName": "s", "parameters": {"sasl": "sasl"}},
            },
        }
    )
    assert len(by_kind(on, "ScaledObject")) == len(by_kind(on, "TriggerAuthentication")) == 1
    off = render({"name": "demo"})
    assert by_kind(off, "ScaledObject") == by_kind(off, "TriggerAuthentication") == []


def test_min_above_max_replicas_fails_the_render() -> None:
    result = helm_run(
        "template",
        stdin=json.dumps(
            {
                "name": "demo",
                "autoscaling": {
                    "enabled": True,
                    "minReplicas": 3,
                    "maxReplicas": 1,
                    "triggers": [{"type": "kafka", "metadata": {}}],
                    "authentication": {"secretName": "s", "parameters": {}},
                },
            }
        ),
    )
    assert result.returncode != 0
    assert "minReplicas must not exceed autoscaling.maxReplicas" in result.stderr
