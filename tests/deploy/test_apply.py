"""Both stacks are accepted by a real kube-apiserver: schemas, CRDs, Pod Security, upgrades."""

from __future__ import annotations

import copy

import pytest

from tests.deploy.apiserver import ApiServer, Rejection, pod_from_template
from tests.deploy.rollout import NEXT_TAG, STACKS, deploy, prefix_of
from tests.deploy.stack import Rendered, config_for, identity, render_stack, shop_config
from tests.unit.infra.program import SHOP, SHOP_PROGRAM
from tide.catalog_file import load_catalog


def _report(rejections: list[Rejection]) -> str:
    return "the API server refused:\n" + "\n".join(f"  {r}" for r in rejections)


@pytest.mark.parametrize("stack", STACKS)
def test_every_object_the_stack_renders_is_accepted(
    stack: str, deployed: dict[str, list[Rejection]], rendered: dict[str, Rendered]
) -> None:
    assert not deployed[stack], _report(deployed[stack])
    # Tide's own objects, at least: namespaces, secrets, CRs, jobs and every service's chart.
    assert len(rendered[stack].objects) > 100
    print(
        f"\n{stack}: {len(rendered[stack].objects)} objects applied; "
        f"rendered by the provider only on a cluster: {', '.join(rendered[stack].upstream)}"
    )


@pytest.mark.parametrize("stack", STACKS)
def test_an_upgrade_to_a_new_image_and_config_applies_in_place_or_replaces(
    stack: str, api: ApiServer, deployed: dict[str, list[Rejection]], rendered: dict[str, Rendered]
) -> None:
    assert not deployed[stack], "the first deploy failed; see the test above"
    prefix = prefix_of(stack)
    config = config_for(
        stack,
        prefix=prefix,
        image_tag=NEXT_TAG,
        # Storage only grows: CloudNativePG's webhook refuses to shrink a volume.
        postgres={
            "instances": 3 if stack == "cloud" else 2,
            "storage": {"size": "100Gi" if stack == "cloud" else "2Gi"},
        },
    )
    upgraded = render_stack(stack, config, prefix)
    before = {identity(o) for o in rendered[stack].objects}
    after = {identity(o) for o in upgraded.objects}
    # What the program no longer declares, Pulumi deletes after creating its replacement.
    rejected = deploy(api, upgraded)
    assert not rejected, _report(rejected)
    for document in rendered[stack].objects:
        if identity(document) not in after:
            api.delete(document)
    images = {
        c["image"]
        for o in upgraded.objects
        if (pod := pod_from_template(o)) is not None
        for c in pod["spec"]["containers"]
        if c["image"].startswith("tide:")
    }
    assert images == {f"tide:{NEXT_TAG}"}
    assert before != after or images


def test_the_server_refuses_what_a_cluster_would_refuse(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    """The tier can fail: a typo, a CRD schema violation and a root pod are each refused."""
    objects = rendered["kind"].objects
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["replica"] = 3
    typo = api.apply(deployment, dry_run=True)
    assert typo is not None
    assert ".spec.replica: field not declared in schema" in typo.message

    topic = copy.deepcopy(next(o for o in objects if o["kind"] == "KafkaTopic"))
    topic["spec"]["partitions"] = "six"
    schema = api.apply(topic, dry_run=True)
    assert schema is not None
    assert "spec.partitions" in schema.message

    # A Tide service in the apps namespace, which enforces the "restricted" profile.
    service = next(
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["namespace"].endswith("-apps")
    )
    pod = pod_from_template(copy.deepcopy(service))
    assert pod is not None
    pod["spec"]["securityContext"] = {"runAsUser": 0}
    del pod["spec"]["containers"][0]["securityContext"]
    security = api.create(pod, dry_run=True)
    assert security is not None
    assert 'violates PodSecurity "restricted:latest"' in security.message


def test_a_teams_own_platform_is_accepted_as_tides_is(
    api: ApiServer, deployed: dict[str, list[Rejection]]
) -> None:
    """examples/orders' own program: the same TidePlatform, the shop's catalog and image."""
    assert not deployed["kind"], "Tide's own stack failed first; see the tests above"
    prefix = "shop-deploy"
    shop = render_stack("kind", shop_config("kind", prefix=prefix), prefix, SHOP_PROGRAM)
    rejected = deploy(api, shop)
    assert not rejected, _report(rejected)
    catalog = load_catalog(SHOP / "catalog.yaml")
    workloads = {
        (o["metadata"]["name"], o["spec"]["template"]["spec"]["containers"][0]["image"])
        for o in shop.objects
        if o["kind"] == "Deployment" and o["metadata"]["namespace"] == f"{prefix}-apps"
    }
    assert workloads == {(service.name, "shop:0.1.0") for service in catalog.services}
    # What Tide derives for each group is on the server: its DLQ topic and its ScaledObject.
    derived = {
        (o["kind"], o["metadata"]["name"]): o
        for o in shop.objects
        if o["kind"] in ("KafkaTopic", "ScaledObject")
    }
    for group in catalog.consumer_groups:
        for kind, name in (("KafkaTopic", group.dlq_topic), ("ScaledObject", group.name)):
            assert (kind, name) in derived, (kind, name)
            assert api.get(derived[kind, name]) is not None, (kind, name)
    print(f"\nshop: {len(shop.objects)} objects applied")
