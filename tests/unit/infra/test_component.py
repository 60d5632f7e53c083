"""TidePlatform is a component that a team's own Pulumi program instantiates with its
catalog, its image and its settings; Tide's own program is one such user."""

from __future__ import annotations

from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import ROOT, Program, run, stack_config
from tide.catalog import CATALOG
from tide.catalog_file import load_catalog

SHOP = ROOT / "examples" / "orders"
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
    program = run("kind", stack_config("kind", SHOP), main=SHOP / "deploy" / "__main__.py")
    (component,) = program.of_type(COMPONENT)
    assert component.name == "shop"
    shop = load_catalog(SHOP / "catalog.yaml")
    charts = {c.name: c for c in program.of_type("helm.sh/v4:Chart")}
    assert {s.name for s in shop.services} <= set(charts)
    assert not {s.name for s in CATALOG.services} & set(charts)
    values = charts["orders-api"].inputs["values"]
    (deployment,) = by_kind(render(values, namespace=charts["orders-api"].inputs["namespace"]),
                            "Deployment")  # fmt: skip
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "shop:0.1.0"
    parts = _top_level(program)
    assert len(parts) > len(shop.services), parts
    assert set(parts.values()) == {(COMPONENT, "shop")}


def test_tides_own_program_is_one_user_of_the_component(kind: Program) -> None:
    (component,) = kind.of_type(COMPONENT)
    assert component.name == "platform"
    assert set(_top_level(kind).values()) == {(COMPONENT, "platform")}
