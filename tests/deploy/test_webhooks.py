"""KEDA's and CloudNativePG's own admission webhooks judge what the tier applies, as in a cluster.

The webhooks run from upstream's binaries at the pinned versions (tests/harness/webhooks.py),
registered before the stacks are applied, so test_apply.py's acceptance holds with them on.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.deploy.apiserver import ApiServer, Rejection
from tests.deploy.stack import Rendered

KEDA_SCALED_OBJECTS = 'admission webhook "vscaledobject.kb.io" denied the request'
CNPG_CLUSTERS = 'admission webhook "vcluster.cnpg.io" denied the request'
# CloudNativePG's own switch for its validating webhooks (internal/webhook/v1/common.go):
# with it the API server's schema judges a Cluster alone.
CNPG_VALIDATION = "cnpg.io/validation"


def _first(rendered: dict[str, Rendered], kind: str) -> dict[str, Any]:
    document = next(o for o in rendered["kind"].objects if o["kind"] == kind)
    return copy.deepcopy(document)


def _refused(rejection: Rejection | None, by: str, because: str) -> None:
    assert rejection is not None, f"accepted; expected {by}: {because}"
    assert by in rejection.message, rejection.message
    assert because in rejection.message, rejection.message


def test_keda_refuses_a_second_scaled_object_for_a_deployment_one_already_scales(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    assert not deployed["kind"], "the first deploy failed; see test_apply.py"
    scaled = _first(rendered, "ScaledObject")
    twin = copy.deepcopy(scaled)
    twin["metadata"]["name"] += "-twin"
    _refused(
        api.apply(twin, dry_run=True),
        by=KEDA_SCALED_OBJECTS,
        because=f"is already managed by the ScaledObject '{scaled['metadata']['name']}'",
    )
    # The same object scaling a Deployment of its own is accepted: only the shared target is wrong.
    twin["spec"]["scaleTargetRef"]["name"] += "-twin"
    assert api.apply(twin, dry_run=True) is None


def test_keda_refuses_triggers_that_share_a_name(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    assert not deployed["kind"], "the first deploy failed; see test_apply.py"
    scaled = _first(rendered, "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    scaled["spec"]["triggers"] = [{**trigger, "name": "lag"}, {**trigger, "name": "lag"}]
    _refused(
        api.apply(scaled, dry_run=True),
        by=KEDA_SCALED_OBJECTS,
        because='triggerName "lag" is defined multiple times',
    )
    scaled["spec"]["triggers"][1]["name"] = "more-lag"
    assert api.apply(scaled, dry_run=True) is None


def test_cloudnative_pg_refuses_a_cluster_its_schema_accepts(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    assert not deployed["kind"], "the first deploy failed; see test_apply.py"
    cluster = _first(rendered, "Cluster")
    cluster["metadata"]["name"] += "-invalid"
    invalid = {
        # A moving tag hides major upgrades from the operator.
        "imageName": (
            "ghcr.io/cloudnative-pg/postgresql:latest",
            "Can't use 'latest' as image tag",
        ),
        "storage": ({"size": "ten gigabytes"}, "Size value isn't valid"),
    }
    for field, (value, reason) in invalid.items():
        document = copy.deepcopy(cluster)
        document["spec"][field] = value
        _refused(api.apply(document, dry_run=True), by=CNPG_CLUSTERS, because=reason)
        document["metadata"].setdefault("annotations", {})[CNPG_VALIDATION] = "disabled"
        assert api.apply(document, dry_run=True) is None, f"the schema alone refuses spec.{field}"


def test_cloudnative_pg_fills_in_its_defaults_on_the_stored_cluster(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    """Its mutating webhook acted: defaults no CRD schema gives are on the stored Cluster."""
    assert not deployed["kind"], "the first deploy failed; see test_apply.py"
    cluster = _first(rendered, "Cluster")
    assert "affinity" not in cluster["spec"]
    stored = api.get(cluster)
    assert stored is not None
    assert stored["spec"]["affinity"]["podAntiAffinityType"] == "preferred"
    assert stored["spec"]["postgresql"]["parameters"], "no PostgreSQL parameters were defaulted"
