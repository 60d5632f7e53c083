"""Every Kubernetes object a stack renders: the Pulumi program under mocks plus Tide's chart.

Upstream charts and release manifests (Strimzi, CloudNativePG, KEDA,
kube-prometheus-stack, the RabbitMQ cluster operator) are fetched by the
provider at `pulumi up` from repositories this machine cannot reach; they are
listed in `Rendered.upstream` and proven only on kind.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.infra.chart import CHART, render
from tests.unit.infra.program import ROOT, SHOP, Program, run, stack_config

CHART_TYPE = "kubernetes:helm.sh/v4:Chart"
# Components the provider expands itself; they are not objects of their own.
_EXPANDED = (CHART_TYPE, "kubernetes:yaml/v2:ConfigFile", "kubernetes:yaml/v2:ConfigGroup")


@dataclass
class Rendered:
    stack: str
    prefix: str
    program: Program
    objects: list[dict[str, Any]] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)


def identity(document: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = document["metadata"]
    return (
        document["apiVersion"],
        document["kind"],
        metadata.get("namespace", ""),
        metadata["name"],
    )


def config_for(stack: str, *, prefix: str, image_tag: str, **overrides: Any) -> dict[str, str]:
    """The stack file's config with fresh namespaces, Tide's harness image and `overrides`."""
    config = stack_config(stack)
    image = json.loads(config["tide:image"])
    config["tide:namespacePrefix"] = prefix
    config["tide:image"] = json.dumps(
        {**image, "repository": "tide", "tag": image_tag, "pullPolicy": "IfNotPresent"}
    )
    for key, value in overrides.items():
        config[f"tide:{key}"] = value if isinstance(value, str) else json.dumps(value)
    return config


def shop_config(stack: str, *, prefix: str) -> dict[str, str]:
    """The shop's stack file's config under fresh namespaces; its program names its image."""
    return stack_config(stack, SHOP) | {"tide:namespacePrefix": prefix}


def render_stack(
    stack: str, config: dict[str, str], prefix: str, main: Path = ROOT / "infra" / "__main__.py"
) -> Rendered:
    """The objects of `main`'s program (Tide's own by default) for `stack` under `config`."""
    program = run(stack, config, main=main)
    rendered = Rendered(stack=stack, prefix=prefix, program=program)
    for resource in program.resources:
        if not resource.type.startswith("kubernetes:"):
            continue
        if resource.type == CHART_TYPE and resource.inputs.get("chart") == str(CHART):
            namespace = resource.inputs["namespace"]
            for document in render(resource.inputs["values"], release=resource.name):
                document.setdefault("metadata", {}).setdefault("namespace", namespace)
                rendered.objects.append(document)
        elif resource.type.startswith(_EXPANDED):
            rendered.upstream.append(
                f"{resource.name}: {resource.inputs.get('chart') or resource.inputs.get('file')}"
            )
        else:
            document = copy.deepcopy(resource.inputs)
            metadata = document.setdefault("metadata", {})
            # Pulumi auto-names an object without a name after its resource.
            metadata.setdefault("name", resource.name)
            rendered.objects.append(document)
    return rendered
