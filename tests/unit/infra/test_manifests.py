"""Every core Kubernetes object Tide declares validates against the Kubernetes OpenAPI schema."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from ott.catalog import CATALOG
from tests.unit.infra.chart import render
from tests.unit.infra.program import ROOT, Program

# The oldest Kubernetes Tide supports (Strimzi 0.48 needs 1.27+), and the one `make up` runs.
OLDEST_KUBERNETES = "1.33.0"
KIND_NODE = yaml.safe_load((ROOT / "k8s" / "kind" / "cluster.yaml").read_text())["nodes"][0]
KIND_KUBERNETES = KIND_NODE["image"].split(":v")[1].split("@")[0]
CORE_KINDS = ("core/v1:", "apps/v1:", "batch/v1:", "networking.k8s.io/v1:", "policy/v1:")


def _validate(manifest: dict[str, Any]) -> None:
    for version in (OLDEST_KUBERNETES, KIND_KUBERNETES):
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            name = manifest["metadata"].get("name")
            pytest.fail(f"{manifest['kind']} {name} on {version}: {error.message} at {error.path}")


def test_core_objects_declared_by_the_program_validate(program: Program) -> None:
    core = [
        r
        for r in program.resources
        if r.type.startswith("kubernetes:") and any(k in r.type for k in CORE_KINDS)
    ]
    assert len(core) > 20
    for resource in core:
        _validate(resource.manifest)


def test_rendered_chart_objects_validate(program: Program) -> None:
    checked = 0
    for service in CATALOG.services:
        values = program.named("helm.sh/v4:Chart", service.name).inputs["values"]
        for document in render(values):
            if document["apiVersion"].startswith(("keda.sh", "monitoring.coreos.com")):
                continue  # custom resources: their operators' CRDs, not the core schema
            _validate(document)
            checked += 1
    # ServiceAccount, Service, Deployment and NetworkPolicy at least, per service.
    assert checked >= 4 * len(CATALOG.services)


def test_a_broken_manifest_is_caught() -> None:
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "three", "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KIND_KUBERNETES, strict=True)
