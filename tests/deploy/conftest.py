"""The deploy tier's session: a real API server with the upstream CRDs, and both stacks on it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from infra.config import Versions

from tests.deploy.apiserver import ApiServer, Rejection
from tests.deploy.rollout import STACKS, deploy, first_render
from tests.deploy.stack import Rendered
from tests.harness.controlplane import ControlPlane
from tests.harness.crds import crd_documents


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane(Path(tempfile.mkdtemp(prefix="tide-controlplane-")))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> ApiServer:
    """A cluster admin's client, with every CRD the program uses installed and established."""
    server = ApiServer(control_plane.kubeconfig)
    crds = crd_documents(Versions())
    rejected = server.apply_all(crds)
    assert not rejected, "upstream CRDs refused:\n" + "\n".join(map(str, rejected))
    server.wait_established(crd["metadata"]["name"] for crd in crds)
    return server


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return {stack: first_render(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def deployed(api: ApiServer, rendered: dict[str, Rendered]) -> dict[str, list[Rejection]]:
    """Each stack applied once; the server's refusals per stack."""
    return {stack: deploy(api, rendered[stack]) for stack in STACKS}
