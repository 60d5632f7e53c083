"""The deploy tier's session: a real API server with the upstream CRDs, and both stacks on it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infra.config import Versions

from tests.deploy.apiserver import ApiServer, Rejection
from tests.deploy.rollout import FIRST_TAG, NEXT_TAG, STACKS, deploy, first_render
from tests.deploy.stack import Rendered
from tests.harness.controlplane import ControlPlane
from tests.harness.crds import crd_documents
from tests.harness.docker import docker, service_image
from tests.harness.webhooks import AdmissionWebhooks


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with ControlPlane(Path(tempfile.mkdtemp(prefix="tide-controlplane-"))) as plane:
        yield plane


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
    """A cluster admin's client, with every CRD the program uses installed and established,
    and KEDA's and CloudNativePG's admission webhooks registered and consulted."""
    server = ApiServer(control_plane.kubeconfig)
    server.install(crd_documents(Versions()))
    webhooks = AdmissionWebhooks(
        control_plane.workdir / "webhooks", kubeconfig=control_plane.kubeconfig
    )
    webhooks.start()
    try:
        rejected = server.apply_all(webhooks.configurations())
        assert not rejected, "webhook configurations refused:\n" + "\n".join(map(str, rejected))
        webhooks.wait_consulted(lambda probe: _refusal(server, probe))
        yield server
    finally:
        webhooks.stop()


def _refusal(server: ApiServer, document: dict[str, Any]) -> str | None:
    rejection = server.apply(document, dry_run=True)
    return rejection.message if rejection is not None else None


@pytest.fixture(scope="session")
def tide_image() -> Iterator[str]:
    """services/Dockerfile on a debootstrap base, under both tags the stacks render."""
    with service_image(f"tide:{FIRST_TAG}") as image:
        docker("tag", image, f"tide:{NEXT_TAG}")
        yield image


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return {stack: first_render(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def deployed(api: ApiServer, rendered: dict[str, Rendered]) -> dict[str, list[Rejection]]:
    """Each stack applied once; the server's refusals per stack."""
    return {stack: deploy(api, rendered[stack]) for stack in STACKS}
