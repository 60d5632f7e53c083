"""`tide scale`: the Kubernetes patches it writes, and its refusals."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ott.catalog import CATALOG
from tide.cli import EXIT_USAGE, app
from tide.scaling import PAUSED_REPLICAS, Patch, ScaleRefusedError, replicas_of, scale_plan


def test_manual_scale_pauses_keda_at_that_count_then_sets_the_deployment() -> None:
    plan = scale_plan(CATALOG, "recommendation", 2, "tide-apps")
    assert plan == [
        Patch(
            "ScaledObject",
            "recommendation",
            "tide-apps",
            {"metadata": {"annotations": {PAUSED_REPLICAS: "2"}}},
        ),
        Patch("Deployment/scale", "recommendation", "tide-apps", {"spec": {"replicas": 2}}),
    ]


def test_auto_removes_the_pause_and_leaves_the_count_to_keda() -> None:
    (patch,) = scale_plan(CATALOG, "recommendation", "auto", "tide-apps")
    assert patch.kind == "ScaledObject"
    # A merge patch with null deletes the annotation.
    assert patch.body == {"metadata": {"annotations": {PAUSED_REPLICAS: None}}}


def test_zero_is_allowed_to_stop_a_group_on_purpose() -> None:
    assert scale_plan(CATALOG, "badges", 0, "ns")[1].body == {"spec": {"replicas": 0}}


def test_more_replicas_than_partitions_is_refused_saying_why() -> None:
    with pytest.raises(ScaleRefusedError) as caught:
        scale_plan(CATALOG, "recommendation", 4, "tide-apps")
    assert "4 replicas would leave 1 idle" in str(caught.value)
    assert "3 partitions" in str(caught.value)


def test_unknown_and_unscaled_services_are_refused() -> None:
    with pytest.raises(
        ScaleRefusedError, match="unknown service 'recomendation'; known: video-service"
    ):
        scale_plan(CATALOG, "recomendation", 1, "ns")
    with pytest.raises(ScaleRefusedError, match="not autoscaled"):
        scale_plan(CATALOG, "video-service", 3, "ns")


def test_cli_prints_the_patches_on_dry_run_and_exits_2_on_refusal() -> None:
    runner = CliRunner()
    dry = runner.invoke(app, ["scale", "personalization", "3", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f'"{PAUSED_REPLICAS}": "3"' in dry.stdout
    refused = runner.invoke(app, ["scale", "personalization", "9"])
    assert refused.exit_code == EXIT_USAGE
    assert "idle" in refused.output
    bad = runner.invoke(app, ["scale", "personalization", "lots"])
    assert bad.exit_code == EXIT_USAGE


def test_status_replicas_come_from_the_deployment_and_keda_ceiling() -> None:
    deployment = {"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}
    scaled = {"metadata": {"annotations": {}}, "spec": {"maxReplicaCount": 6}}
    assert str(replicas_of(deployment, scaled)) == "2/3/6"


def test_status_marks_a_count_held_by_tide_scale_and_a_service_without_keda() -> None:
    deployment = {"spec": {"replicas": 4}, "status": {"readyReplicas": 4}}
    held = {"metadata": {"annotations": {PAUSED_REPLICAS: "4"}}, "spec": {"maxReplicaCount": 6}}
    assert str(replicas_of(deployment, held)) == "4/4/6 (held)"
    assert str(replicas_of({"spec": {"replicas": 1}, "status": {}}, None)) == "0/1/-"
    assert replicas_of(None, None) is None
