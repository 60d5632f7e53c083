"""Server-side apply, as pulumi-kubernetes does it, against the harness's real kube-apiserver."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

from tide.waiting import wait_until

FIELD_MANAGER = "pulumi-kubernetes"
# The order pulumi-kubernetes' dependency graph ends up with: what others refer to, first.
_FIRST = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap")
# Workloads whose pod template Pod Security judges when a Pod is made from it.
POD_TEMPLATES = {"Deployment": ("spec", "template"), "StatefulSet": ("spec", "template")}


@dataclass(frozen=True)
class Rejection:
    """An object the API server refused, with its message."""

    what: str
    message: str

    def __str__(self) -> str:
        # The server prints whole objects in some refusals; the reason is at either end.
        message = self.message
        if len(message) > 600:
            message = f"{message[:300]} ... {message[-300:]}"
        return f"{self.what}: {message}"


def describe(document: dict[str, Any]) -> str:
    metadata = document.get("metadata", {})
    where = f"{metadata.get('namespace')}/" if metadata.get("namespace") else ""
    return f"{document.get('kind')} {where}{metadata.get('name')}"


def _message(error: DynamicApiError) -> str:
    try:
        body = json.loads(error.body)
    except (TypeError, ValueError):
        return str(error.body or error)
    return str(body.get("message", body))


class ApiServer:
    """A cluster admin's client for one API server."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api = kube_config.new_client_from_config(config_file=str(kubeconfig))
        self.client = DynamicClient(self.api)

    def resource(self, document: dict[str, Any]) -> Any:
        return self.client.resources.get(api_version=document["apiVersion"], kind=document["kind"])

    def refresh_discovery(self) -> None:
        self.client.resources.invalidate_cache()  # type: ignore[no-untyped-call]

    def apply(self, document: dict[str, Any], *, dry_run: bool = False) -> Rejection | None:
        """Server-side apply with strict field validation; the server's refusal, if any."""
        try:
            resource = self.resource(document)
        except ResourceNotFoundError:
            return Rejection(
                describe(document),
                f"the server has no {document['apiVersion']} {document['kind']} (missing CRD?)",
            )
        body = document
        if resource.namespaced:
            body = {**document, "metadata": {"namespace": "default", **document["metadata"]}}
        params: list[tuple[str, str]] = [("fieldValidation", "Strict")]
        try:
            self.client.server_side_apply(
                resource,
                body=body,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                dry_run="All" if dry_run else None,
                query_params=params,
            )
        except DynamicApiError as error:
            return Rejection(describe(document), _message(error))
        return None

    def apply_all(
        self, documents: Iterable[dict[str, Any]], *, dry_run: bool = False
    ) -> list[Rejection]:
        ordered = sorted(
            documents,
            key=lambda d: _FIRST.index(d["kind"]) if d["kind"] in _FIRST else len(_FIRST),
        )
        rejections = []
        for document in ordered:
            rejection = self.apply(document, dry_run=dry_run)
            if rejection is not None:
                rejections.append(rejection)
        return rejections

    def create(self, document: dict[str, Any], *, dry_run: bool = False) -> Rejection | None:
        resource = self.resource(document)
        try:
            resource.create(
                body=document,
                namespace=document["metadata"].get("namespace"),
                dry_run="All" if dry_run else None,
                query_params=[("fieldValidation", "Strict")],
            )
        except DynamicApiError as error:
            return Rejection(describe(document), _message(error))
        return None

    def delete(self, document: dict[str, Any]) -> None:
        resource = self.resource(document)
        metadata = document["metadata"]
        with contextlib.suppress(NotFoundError):
            resource.delete(
                name=metadata["name"],
                namespace=metadata.get("namespace") if resource.namespaced else None,
            )

    def get(self, document: dict[str, Any]) -> dict[str, Any] | None:
        resource = self.resource(document)
        metadata = document["metadata"]
        try:
            found = resource.get(
                name=metadata["name"],
                namespace=metadata.get("namespace") if resource.namespaced else None,
            )
        except NotFoundError:
            return None
        return dict(found.to_dict())

    def names(self, api_version: str, kind: str, namespace: str) -> set[str]:
        resource = self.client.resources.get(api_version=api_version, kind=kind)
        return {item.metadata.name for item in resource.get(namespace=namespace).items}

    def install(self, crds: list[dict[str, Any]]) -> None:
        """Apply CRDs and wait until every one is served; a refusal fails with its message."""
        refused = self.apply_all(crds)
        assert not refused, "CRDs refused:\n" + "\n".join(map(str, refused))
        self.wait_established(crd["metadata"]["name"] for crd in crds)

    def wait_established(self, crd_names: Iterable[str], timeout: float = 60) -> None:
        """Every CRD served: its `Established` condition is True."""
        crds = self.client.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        pending = set(crd_names)

        def established() -> bool:
            for name in list(pending):
                status = crds.get(name=name).to_dict().get("status") or {}
                conditions = status.get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    pending.discard(name)
            return not pending

        wait_until(established, timeout=timeout, what="every CRD established")
        self.refresh_discovery()


def pod_from_template(document: dict[str, Any]) -> dict[str, Any] | None:
    """The Pod a workload's controller would create, so Pod Security judges it as it would."""
    kind = document["kind"]
    if kind == "Job":
        template = document["spec"]["template"]
    elif kind == "CronJob":
        template = document["spec"]["jobTemplate"]["spec"]["template"]
    elif kind in POD_TEMPLATES:
        template = document["spec"]["template"]
    else:
        return None
    metadata = template.get("metadata", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{document['metadata']['name']}-pod"[:63],
            "namespace": document["metadata"].get("namespace", "default"),
            "labels": metadata.get("labels", {}),
        },
        "spec": template["spec"],
    }
