"""The real Pulumi engine deploys Tide's own program: preview, up, up again, a cluster that
lost its objects, an upgrade, refresh, outputs and destroy, both stacks, operators external.

Each step is judged on the engine's JSON (`--json`), never on screen text.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra import kind, outputs
from infra.components.api_auth import api_key_purpose, derived_api_key
from infra.credentials import SEED_KEY, derive
from infra.local_stack import ROOT, LocalStack, PulumiError

from ott.catalog import CATALOG
from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import KIND_CONTEXT, local_stack, stack_kubeconfig
from tests.harness.cluster import Cluster
from tests.reports import ENGINE, report
from tests.unit.infra.program import stack_config
from tide.topology import Role
from tide.waiting import wait_until

# Every pulumi command of this tier ends long before this; a hang is a failure, not a wait.
STEP_TIMEOUT_S = 900
# A stack's whole lifecycle: about 3 minutes on an idle machine, over 5 under load.
pytestmark = pytest.mark.timeout(1800)
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
ROTATED_SEED = "rotated-" + "1" * 40


def _json(stack: LocalStack, *args: str) -> dict[str, Any]:
    """A preview's JSON document: its steps and change summary."""
    output = stack.run(*args, "--json", capture=True, timeout=STEP_TIMEOUT_S)
    document: dict[str, Any] = json.loads(output)
    return document


def _changed(stack: LocalStack, *args: str) -> dict[str, int]:
    """Run an update (up, refresh, destroy) and return its summary's resource changes.

    With --json these stream engine events, one JSON object a line; the summary
    event says what changed and whether the update succeeded.
    """
    output = stack.run(*args, "--json", capture=True, timeout=STEP_TIMEOUT_S)
    events = [json.loads(line) for line in output.splitlines() if line.strip()]
    (summary,) = [e["summaryEvent"] for e in events if "summaryEvent" in e]
    errors = [
        e["diagnosticEvent"]["message"]
        for e in events
        if e.get("diagnosticEvent", {}).get("severity") == "error"
    ]
    assert summary["result"] == "succeeded", errors
    changes: dict[str, int] = summary["resourceChanges"]
    return changes


def _timed(step: str, times: dict[str, float], stack: LocalStack, *args: str) -> dict[str, int]:
    started = time.monotonic()
    changes = _changed(stack, *args)
    times[step] = time.monotonic() - started
    return changes


def _changes(summary: dict[str, int]) -> dict[str, int]:
    """What an update changed: reads of existing objects (the CRD checks) change nothing."""
    return {op: n for op, n in summary.items() if op not in ("same", "read") and n}


def _steps_by_op(preview: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """op -> (type, name) of every resource the preview would touch."""
    found: dict[str, list[tuple[str, str]]] = {}
    for step in preview.get("steps", []):
        urn = step["urn"]
        type_, name = urn.split("::")[-2].split("$")[-1], urn.split("::")[-1]
        found.setdefault(step["op"], []).append((type_, name))
    return found


# Tide's program before TidePlatform: the same parts, declared at the stack's root.
_BEFORE_THE_COMPONENT = """
from infra.config import load
from infra.credentials import Credentials
from infra.platform import build
from ott.catalog import CATALOG

config = load()
build(config, config.platform_catalog(CATALOG), Credentials.from_stack_config())
"""


def _program_before_the_component(stack: LocalStack, engine_dir: Path) -> None:
    program = engine_dir / "program-before-the-component"
    program.mkdir(exist_ok=True)
    (program / "__main__.py").write_text(_BEFORE_THE_COMPONENT)
    project = yaml.safe_load((stack.project / "Pulumi.yaml").read_text())
    project["main"] = str(program)
    (stack.project / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))


def _namespaces(api: ApiServer, prefix: str) -> set[str]:
    resource = api.client.resources.get(api_version="v1", kind="Namespace")
    return {
        item.metadata.name
        for item in resource.get().items
        if item.metadata.name.startswith(f"{prefix}-")
    }


def _deployments(api: ApiServer, namespace: str) -> dict[str, dict[str, Any]]:
    resource = api.client.resources.get(api_version="apps/v1", kind="Deployment")
    return {i.metadata.name: i.to_dict() for i in resource.get(namespace=namespace).items}


def _wait_gone(api: ApiServer, prefix: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _namespaces(api, prefix):
        assert time.monotonic() < deadline, f"namespaces still there: {_namespaces(api, prefix)}"
        time.sleep(1)  # the namespace controller finalizes on its own schedule; poll it


def test_a_missing_operator_stops_the_update_naming_its_crd_before_anything_exists(
    cluster: Cluster, cluster_api: ApiServer, engine_dir: Path
) -> None:
    # The cloud stack signs its Kafka listener with cert-manager: without cert-manager's
    # CRDs in the cluster, `tide:operators: external` must stop before creating anything.
    # (A preview cannot tell: the engine plans reads in a preview, it does not fail them.)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "certificates.cert-manager.io"},
    }
    installed = cluster_api.get(crd)
    assert installed is not None
    cluster_api.delete(crd)
    try:
        wait_until(lambda: cluster_api.get(crd) is None, timeout=60, what="the CRD deleted")
        kubeconfig = stack_kubeconfig(cluster, engine_dir / "kubeconfig-missing")
        stack = local_stack(
            "cloud", engine_dir, kubeconfig, home="stack-missing-crd",
            **{"tide:namespacePrefix": "eng-missing", "kubernetes:context": KIND_CONTEXT},
        )  # fmt: skip
        stack.ensure()
        with pytest.raises(PulumiError) as failed:
            stack.run("up", "--stack", "cloud", "--yes", "--skip-preview", capture=True,
                      timeout=STEP_TIMEOUT_S)  # fmt: skip
        assert "resource 'certificates.cert-manager.io' does not exist" in str(failed.value)
        assert not _namespaces(cluster_api, "eng-missing"), "the update created namespaces"
    finally:
        for field in ("status", "uid", "resourceVersion", "creationTimestamp", "generation"):
            installed["metadata"].pop(field, None)
        installed.pop("status", None)
        installed["metadata"].pop("managedFields", None)
        assert cluster_api.apply(installed) is None
        cluster_api.wait_established([crd["metadata"]["name"]])


@pytest.mark.parametrize("stack_name", ["kind", "cloud"])
def test_pulumi_deploys_upgrades_refreshes_and_destroys_tides_program(
    stack_name: str, cluster: Cluster, cluster_api: ApiServer, engine_dir: Path
) -> None:
    prefix = f"eng-{stack_name}"
    kubeconfig = stack_kubeconfig(cluster, engine_dir / f"kubeconfig-{stack_name}")
    overrides: dict[str, object] = {
        "tide:namespacePrefix": prefix,
        "tide:image": {"repository": "tide", "tag": "engine-1", "pullPolicy": "IfNotPresent"},
    }
    if stack_name == "cloud":
        # The cloud stack file leaves the context to the user (README); the kind stack
        # names its own, which this kubeconfig does not select.
        overrides["kubernetes:context"] = KIND_CONTEXT
    tracked = (ROOT / f"Pulumi.{stack_name}.yaml").read_bytes()
    stack = local_stack(stack_name, engine_dir, kubeconfig, **overrides)
    times: dict[str, float] = {}
    counts: dict[str, object] = {}

    # preview: every resource would be created; the CRD checks read what exists.
    stack.ensure()
    started = time.monotonic()
    preview = _json(stack, "preview", "--stack", stack_name)
    times["preview"] = time.monotonic() - started
    ops = _steps_by_op(preview)
    counts["preview"] = {op: len(found) for op, found in ops.items()}
    assert set(ops) <= {"create", "read"}, f"a first preview does more than create: {set(ops)}"
    created = len(ops["create"])
    assert created > 100

    # up: every resource created, the provider's awaits satisfied. The kind stack is put up
    # by the program as it was before TidePlatform (its parts at the stack's root), so the
    # next step shows that such a stack updates in place.
    before = stack_name == "kind"
    if before:
        _program_before_the_component(stack, engine_dir)
    up = _timed("up", times, stack, "up", "--stack", stack_name, "--yes", "--skip-preview")
    counts["up"] = up
    assert _changes(up) == {"create": created - 1 if before else created}
    apps = f"{prefix}-apps"
    deployments = _deployments(cluster_api, apps)
    assert set(deployments) >= {s.name for s in CATALOG.services}
    for name, deployment in deployments.items():
        status = deployment["status"] or {}
        assert status.get("readyReplicas") == deployment["spec"]["replicas"], name

    # up again: nothing to do. After the program before TidePlatform, only the component
    # itself is new: every part keeps its URN through its alias, nothing is replaced.
    stack.write_project()
    again = _timed("up again", times, stack, "up", "--stack", stack_name, "--yes", "--skip-preview")
    counts["up again"] = again
    assert _changes(again) == ({"create": 1} if before else {})

    if stack_name == "kind":
        # A cluster recreated behind the state's back (kind delete cluster, a Docker reset):
        # make up's own `pulumi up` finds the objects gone and makes them again.
        for namespace in _namespaces(cluster_api, prefix):
            cluster_api.delete({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": namespace}})  # fmt: skip
        _wait_gone(cluster_api, prefix)
        started = time.monotonic()
        kind.pulumi_up(stack)
        times["make up after the cluster lost everything"] = time.monotonic() - started
        assert set(_deployments(cluster_api, apps)) >= {s.name for s in CATALOG.services}

    # A new credential seed rotates every password and every derived API key: Secrets
    # change (pulumi-kubernetes replaces a Secret whose data changed, under the same name);
    # the other services pick the new passwords up at their next restart. Only the APIs
    # roll, under api-keys: they read their keys at start (checksum/tide-api-keys).
    stack.run("config", "set", "--secret", "--stack", stack_name, f"tide:{SEED_KEY}",
              ROTATED_SEED, capture=True)  # fmt: skip
    rotation = _steps_by_op(_json(stack, "preview", "--stack", stack_name))
    rotated_types = Counter(t for t, _n in rotation.get("replace", []))
    counts["seed rotation replaces"] = dict(rotated_types)
    assert set(rotation) <= {"same", "read", "replace", "update"}, set(rotation)
    assert set(rotated_types) == {"kubernetes:core/v1:Secret"}
    rolled = rotation.get("update", [])
    apis = {s.name for s in CATALOG.services if s.role is Role.API}
    keys_derived = json.loads(stack_config(stack_name)["tide:auth"])["mode"] == "api-keys"
    if keys_derived:
        assert {t for t, _n in rolled} == {DEPLOYMENT}, rolled
        assert {n.rsplit("/", 1)[-1] for _t, n in rolled} == apis, rolled
    else:
        assert rolled == []
    rotated = _timed("rotate the seed", times, stack, "up", "--stack", stack_name, "--yes",
                     "--skip-preview")  # fmt: skip
    replaced = {"replace": rotated_types["kubernetes:core/v1:Secret"]}
    assert _changes(rotated) == replaced | ({"update": len(rolled)} if rolled else {})

    # upgrade: a new image and a changed setting; the Jobs are replaced, Deployments roll.
    stack.overrides = {
        **stack.overrides,
        "tide:image": {"repository": "tide", "tag": "engine-2", "pullPolicy": "IfNotPresent"},
        "tide:rabbitmq": {"replicas": 3 if stack_name == "kind" else 5},
    }
    stack.write_stack_file()
    upgrade = _steps_by_op(_json(stack, "preview", "--stack", stack_name))
    replaced = sorted(upgrade.get("replace", []))
    counts["upgrade replaces"] = [name for _type, name in replaced]
    assert {type_ for type_, _name in replaced} == {JOB}, replaced
    assert {name for _type, name in replaced} == {"postgres-migrate", "registry-register"}
    updated = Counter(type_ for type_, _name in upgrade.get("update", []))
    counts["upgrade updates"] = dict(updated)
    assert updated[DEPLOYMENT] == len(CATALOG.services)
    assert set(upgrade) <= {
        "same",
        "replace",
        "update",
        "read",
        "create-replacement",
        "delete-replaced",
    }
    applied = _timed(
        "upgrade", times, stack, "up", "--stack", stack_name, "--yes", "--skip-preview"
    )
    counts["upgrade"] = applied
    for name, deployment in _deployments(cluster_api, apps).items():
        images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
        if name in {s.name for s in CATALOG.services}:
            assert images == {"tide:engine-2"}, name
            assert deployment["status"]["updatedReplicas"] == deployment["spec"]["replicas"]

    # refresh: the cluster holds what the state says.
    refreshed = _timed(
        "refresh", times, stack, "refresh", "--stack", stack_name, "--yes", "--skip-preview"
    )
    counts["refresh"] = refreshed
    drift = _steps_by_op(_json(stack, "preview", "--stack", stack_name, "--expect-no-changes"))
    assert set(drift) <= {"same", "read"}, drift

    # outputs: what the README names.
    shown = stack.outputs()
    expected = {outputs.API_URL, outputs.KAFKA_BOOTSTRAP, outputs.SCHEMA_REGISTRY_URL}
    if keys_derived:  # the clients' keys, derived from the (rotated) seed
        expected.add(outputs.API_KEYS)
        player = derived_api_key(derive(ROTATED_SEED, api_key_purpose("player")))
        assert shown[outputs.API_KEYS] == {"player": player}
    assert set(shown) == expected | {outputs.NAMESPACES}
    assert shown[outputs.NAMESPACES]["apps"] == apps
    assert shown[outputs.KAFKA_BOOTSTRAP] == f"tide-kafka-bootstrap.{prefix}-data.svc:9092"

    # destroy: no Tide object and no namespace left behind, none stuck Terminating.
    destroyed = _timed(
        "destroy", times, stack, "destroy", "--stack", stack_name, "--yes", "--skip-preview"
    )
    counts["destroy"] = destroyed
    _wait_gone(cluster_api, prefix)
    # The tracked stack file is never written; the salt and seed lived under the state.
    assert (ROOT / f"Pulumi.{stack_name}.yaml").read_bytes() == tracked

    # A state directory deleted (`rm -rf .pulumi`) starts afresh instead of meeting an old salt.
    shutil.rmtree(stack.home)
    stack.ensure()
    afresh = _steps_by_op(_json(stack, "preview", "--stack", stack_name))
    assert len(afresh["create"]) == created

    report(
        ENGINE,
        f"{stack_name} stack ({created} resources): "
        + ", ".join(f"{step} {seconds:.0f} s" for step, seconds in times.items())
        + "\n  "
        + "\n  ".join(f"{step}: {value}" for step, value in counts.items()),
    )
