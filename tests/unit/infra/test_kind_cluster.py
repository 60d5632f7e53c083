"""k8s/kind/cluster.yaml exposes on localhost exactly the NodePorts the kind stack uses."""

from __future__ import annotations

import base64

import kubernetes
import pytest
import yaml
from infra import outputs
from infra.components.kafka import EXTERNAL_BOOTSTRAP_NODE_PORT, EXTERNAL_BROKER_NODE_PORT_BASE
from infra.config import parse
from infra.outputs import endpoint_urls

from ott.catalog import CATALOG
from tests.unit.infra.program import KEYS_AUTH, ROOT, stack_config


def _mappings() -> dict[int, int]:
    cluster = yaml.safe_load((ROOT / "k8s" / "kind" / "cluster.yaml").read_text())
    (node,) = cluster["nodes"]
    assert node["image"].startswith("kindest/node:v1."), "the node image must be pinned"
    return {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}


def test_every_node_port_of_the_kind_stack_is_mapped_to_localhost() -> None:
    exposure = yaml.safe_load(stack_config("kind")["tide:exposure"])
    mapped = _mappings()
    assert mapped[exposure["apiNodePort"]] == 8080
    assert mapped[exposure["grafanaNodePort"]] == 3000
    assert mapped[exposure["prometheusNodePort"]] == 9090
    assert EXTERNAL_BOOTSTRAP_NODE_PORT in mapped
    assert EXTERNAL_BROKER_NODE_PORT_BASE in mapped


def test_output_urls_use_the_mapped_host_ports() -> None:
    config = parse({"flavor": "kind", "auth": KEYS_AUTH})
    urls = endpoint_urls(config, {"apps": "tide-apps", "monitoring": "tide-monitoring"}, CATALOG)
    host_ports = set(_mappings().values())
    for key in (outputs.API_URL, outputs.GRAFANA_URL, outputs.PROMETHEUS_URL):
        assert int(urls[key].rsplit(":", 1)[1]) in host_ports, key


def test_the_kind_stack_names_the_context_of_the_cluster_make_up_creates() -> None:
    # Without it the stack deploys into whatever context kubectl has selected (the
    # engine tier runs it with another context selected, which refuses connections).
    cluster = yaml.safe_load((ROOT / "k8s" / "kind" / "cluster.yaml").read_text())
    assert stack_config("kind")["kubernetes:context"] == f"kind-{cluster['name']}"


def test_kind_env_reads_the_operator_secret_from_the_stacks_own_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It read `tide-apps` whatever the stack's namespacePrefix made.

    from infra import kind, outputs  # noqa: PLC0415

    asked: list[str] = []

    class CoreV1Api:
        def read_namespaced_secret(self, name: str, namespace: str) -> object:
            asked.append(namespace)
            return type("Secret", (), {"data": {"password": base64.b64encode(b"pw").decode()}})

    monkeypatch.setattr(kind, "stack_outputs", lambda: {outputs.NAMESPACES: {"apps": "acme-apps"}})
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda **_: None)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", CoreV1Api)
    kind.env()
    assert asked == ["acme-apps"]
    assert "export TIDE_KAFKA_PASSWORD='pw'" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["up", "down"])
def test_make_up_and_down_print_an_error_as_it_is_not_as_markup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Rich read `[a-z0-9-]` in an engine error as a style tag and dropped it, and a `[/x]`
    # in one raised a MarkupError in place of the error itself.
    from infra import kind  # noqa: PLC0415

    message = "name must match [a-z0-9-] (see [/docs] and [bold])"

    def fail(*_: object, **__: object) -> None:
        raise kind.UpError(message)

    monkeypatch.setattr(kind, "check_docker", fail)
    monkeypatch.setattr(kind, "_tool", fail)
    with pytest.raises(kind.typer.Exit):
        getattr(kind, command)()
    assert message in capsys.readouterr().out
