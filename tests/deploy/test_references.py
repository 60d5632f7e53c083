"""What the deployed objects refer to exists on the API server, in the namespace that needs it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.apiserver import ApiServer, Rejection, describe, pod_from_template
from tests.deploy.rollout import STACKS
from tests.deploy.stack import Rendered


def _stored(api: ApiServer, kind: str, namespace: str) -> dict[str, set[str]]:
    """Every object of a core kind in a namespace, by name, with its data keys: one listing."""
    resource = api.client.resources.get(api_version="v1", kind=kind)
    return {
        item.metadata.name: set((item.to_dict().get("data") or {}).keys())
        for item in resource.get(namespace=namespace).items
    }


def _pod_references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret, ConfigMap and ServiceAccount a pod uses."""
    spec = pod["spec"]
    yield "ServiceAccount", spec.get("serviceAccountName", "default"), None
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for variable in container.get("env", []):
            source = variable.get("valueFrom", {})
            if "secretKeyRef" in source:
                yield "Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                yield "ConfigMap", ref["name"], ref["key"]
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"], None
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"], None
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            for item in volume["secret"].get("items") or [{"key": None}]:
                yield "Secret", volume["secret"]["secretName"], item["key"]
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"], None


def _custom_resource_references(document: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
    """Secrets and ConfigMaps that Tide's custom resources hand to their operators."""
    kind, spec = document["kind"], document.get("spec", {})
    if kind == "KafkaUser":
        ref = spec["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        yield "Secret", ref["name"], ref["key"]
    elif kind == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef", []):
            yield "Secret", ref["name"], ref["key"]
    elif kind == "Cluster":
        yield "Secret", spec["bootstrap"]["initdb"]["secret"]["name"], None
        for role in spec.get("managed", {}).get("roles", []):
            yield "Secret", role["passwordSecret"]["name"], "password"
    elif kind == "Kafka":
        ref = spec["kafka"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
        yield "ConfigMap", ref["name"], ref["key"]
        for listener in spec["kafka"]["listeners"]:
            chain = listener.get("configuration", {}).get("brokerCertChainAndKey")
            if chain:
                yield "Secret", chain["secretName"], chain["certificate"]
                yield "Secret", chain["secretName"], chain["key"]
    elif kind == "RabbitmqCluster":
        template = spec["override"]["statefulSet"]["spec"]["template"]
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                yield "Secret", volume["secret"]["secretName"], None


# The keys of the Secret cert-manager writes for a Certificate (cert-manager.io/v1).
_CERTIFICATE_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def _issued(objects: list[dict[str, Any]], namespace: str) -> dict[str, set[str]]:
    """Secrets cert-manager will write for the stack's Certificates in `namespace`."""
    return {
        document["spec"]["secretName"]: _CERTIFICATE_KEYS
        for document in objects
        if document["kind"] == "Certificate"
        and document["metadata"].get("namespace", "default") == namespace
    }


@pytest.mark.parametrize("stack", STACKS)
def test_every_referenced_secret_configmap_and_account_exists_in_its_namespace(
    stack: str, api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    assert not deployed[stack], "the stack was not accepted; see test_apply"
    missing = []
    checked = 0
    listings: dict[tuple[str, str], dict[str, set[str]]] = {}
    for document in rendered[stack].objects:
        namespace = document["metadata"].get("namespace", "default")
        pod = pod_from_template(document)
        references = _pod_references(pod) if pod else _custom_resource_references(document)
        for kind, name, key in references:
            checked += 1
            if (kind, namespace) not in listings:
                listings[kind, namespace] = _stored(api, kind, namespace)
                if kind == "Secret":
                    listings[kind, namespace] |= _issued(rendered[stack].objects, namespace)
            keys = listings[kind, namespace].get(name)
            if kind == "Secret" and (keys is None or (key is not None and key not in keys)):
                missing.append(f"{describe(document)} needs Secret {name} key {key}")
            elif keys is None:
                missing.append(f"{describe(document)} needs {kind} {namespace}/{name}")
    assert checked > 50
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("stack", STACKS)
def test_every_scaled_object_targets_a_deployment_that_exists(
    stack: str, api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    assert not deployed[stack]
    scaled = [o for o in rendered[stack].objects if o["kind"] == "ScaledObject"]
    assert scaled
    for document in scaled:
        target = document["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment"
        namespace = document["metadata"]["namespace"]
        assert target["name"] in api.names("apps/v1", "Deployment", namespace), describe(document)


@pytest.mark.parametrize("stack", STACKS)
def test_every_service_monitor_port_is_a_port_of_the_pods_it_scrapes(
    stack: str, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    """ServiceMonitor -> Service (labels, port name) -> the Deployment's pods (targetPort)."""
    assert not deployed[stack]
    objects = rendered[stack].objects

    def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitors
    for monitor in monitors:
        namespace = monitor["metadata"]["namespace"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in objects
            if s["kind"] == "Service"
            and s["metadata"]["namespace"] == namespace
            and matches(selector, s["metadata"].get("labels", {}))
        ]
        assert services, f"{describe(monitor)} selects no Service"
        for service in services:
            ports = {p["name"]: p for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in ports, f"{describe(monitor)}: {describe(service)}"
                target = ports[endpoint["port"]]["targetPort"]
                pods = [
                    pod
                    for o in objects
                    if (pod := pod_from_template(o)) is not None
                    and pod["metadata"]["namespace"] == namespace
                    and matches(service["spec"]["selector"], pod["metadata"]["labels"])
                ]
                assert pods, f"{describe(service)} selects no pods"
                for pod in pods:
                    names = {
                        p.get("name") if isinstance(target, str) else p["containerPort"]
                        for c in pod["spec"]["containers"]
                        for p in c.get("ports", [])
                    }
                    assert target in names, f"{describe(monitor)}: pods lack port {target}"


def test_secret_values_arrive_as_the_program_wrote_them(
    api: ApiServer, rendered: dict[str, Rendered], deployed: dict[str, list[Rejection]]
) -> None:
    """stringData is stored as data: what a pod reads is what the program generated."""
    assert not deployed["kind"]
    secret = next(
        o for o in rendered["kind"].objects if o["kind"] == "Secret" and "stringData" in o
    )
    stored = api.get(secret)
    assert stored is not None
    decoded = {k: base64.b64decode(v).decode() for k, v in stored["data"].items()}
    assert decoded == {k: str(v) for k, v in secret["stringData"].items()}
