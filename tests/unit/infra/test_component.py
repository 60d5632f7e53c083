"""TidePlatform is a component that a team's own Pulumi program instantiates with its
catalog, its image and its settings; Tide's own program is one such user."""

from __future__ import annotations

from ott.catalog import CATALOG
from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import SHOP, SHOP_PROGRAM, Program, run, stack_config
from tide.catalog_file import load_catalog

COMPONENT = "tide:index:Platform"


def _top_level(program: Program) -> dict[str, tuple[str, str] | None]:
    """The parent of each of the platform's parts (the components `build` declares)."""
    parts = ("tide:platform:Namespaces", "tide:kafka:KafkaCluster", "tide:service:TideService")
    return {
        f"{r.type} {r.name}": r.parent
        for r in program.resources
        if r.type in parts or r.type.startswith("tide:platform:")
    }


def test_a_teams_own_program_deploys_its_catalog_and_its_image() -> None:
    program = run("kind", stack_config("kind", SHOP), main=SHOP_PROGRAM)
    (component,) = program.of_type(COMPONENT)
    assert component.name == "shop"
    shop = load_catalog(SHOP / "catalog.yaml")
    charts = {c.name: c for c in program.of_type("helm.sh/v4:Chart")}
    assert {s.name for s in shop.services} <= set(charts)
    assert not {s.name for s in CATALOG.services} & set(charts)
    values = charts["orders-api"].inputs["values"]
    documents = render(values, namespace=charts["orders-api"].inputs["namespace"])
    (deployment,) = by_kind(documents, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "shop:0.1.0"
    # The API listens where the shop's catalog says, and everything that reaches it agrees.
    port = shop.service("orders-api").http_port
    assert port == 8081
    assert {"name": "TIDE_HTTP_PORT", "value": str(port)} in container["env"]
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]
    (service,) = (s for s in by_kind(documents, "Service") if s["metadata"]["name"] == "orders-api")
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    (policy,) = by_kind(documents, "NetworkPolicy")
    assert {"port": port, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    parts = _top_level(program)
    assert len(parts) > len(shop.services), parts
    assert set(parts.values()) == {(COMPONENT, "shop")}


def test_tides_own_program_is_one_user_of_the_component(kind: Program) -> None:
    (component,) = kind.of_type(COMPONENT)
    assert component.name == "platform"
    assert set(_top_level(kind).values()) == {(COMPONENT, "platform")}
