"""The engine tier's session: a cluster-like control plane, upstream CRDs, played operators,
and Tide's own program run by the real Pulumi engine through `infra.local_stack`."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from infra import kind
from infra.config import Versions
from infra.local_stack import ROOT, LocalStack

from tests.deploy.apiserver import ApiServer
from tests.harness import engine
from tests.harness.cluster import Cluster
from tests.harness.crds import crd_documents
from tests.harness.played_operators import CLOUDNATIVE_PG, RABBITMQ, STRIMZI, PlayedOperators
from tests.harness.rabbitmq_operator import RabbitMQOperator

# The context the kind stack names (Pulumi.kind.yaml, kubernetes:context).
KIND_CONTEXT = "kind-tide"
# The context kubectl has selected: a cluster that refuses every connection. A stack
# that ignored its own context would land here, and fail.
ELSEWHERE = "elsewhere"
# The kind stack the operators reconcile: deployed once by `make up`'s own `pulumi up`,
# beside the lifecycle test's kind stack, so on NodePorts of its own. Its RabbitmqCluster
# is the real RabbitMQ cluster operator's; the lifecycle stacks' are played (the cloud
# stack's claims would need a storage provisioner).
OPERATED = "eng-ops"
OPERATED_DATA = f"{OPERATED}-data"
OPERATED_EXPOSURE = {"serviceType": "NodePort", "apiNodePort": 32080, "grafanaNodePort": 32030,
                     "prometheusNodePort": 32090}  # fmt: skip


def stack_kubeconfig(cluster: Cluster, path: Path) -> Path:
    """The harness cluster as context `kind-tide`, with another context selected."""
    document = yaml.safe_load(cluster.kubeconfig.read_text())
    (harness,) = document["clusters"]
    document["clusters"] = [
        {"name": KIND_CONTEXT, "cluster": harness["cluster"]},
        {"name": ELSEWHERE, "cluster": {"server": "https://127.0.0.1:1"}},
    ]
    document["contexts"] = [
        {"name": KIND_CONTEXT, "context": {"cluster": KIND_CONTEXT, "user": "admin"}},
        {"name": ELSEWHERE, "context": {"cluster": ELSEWHERE, "user": "admin"}},
    ]
    document["current-context"] = ELSEWHERE
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="session")
def engine_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tide-engine-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def cluster(engine_dir: Path) -> Iterator[Cluster]:
    for name in engine.BINARIES:
        engine.binary(name)  # a missing tool fails here, with the command that builds it
    with Cluster(engine_dir / "cluster") as started:
        yield started


@pytest.fixture(scope="session")
def cluster_api(cluster: Cluster) -> Iterator[ApiServer]:
    """Upstream CRDs installed, and Strimzi, CloudNativePG and (but for the operated stack's)
    RabbitMQ status played."""
    api = ApiServer(cluster.kubeconfig)
    api.install(crd_documents(Versions()))
    # cert-manager's own namespace, where a cluster that runs it keeps ClusterIssuer secrets.
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "cert-manager"}})
    rabbitmq = tuple(kind.leave(OPERATED_DATA) for kind in RABBITMQ)
    played = PlayedOperators(cluster.kubeconfig, STRIMZI + CLOUDNATIVE_PG + rabbitmq)
    played.start()
    try:
        yield api
    finally:
        played.stop()
        assert not played.errors, "the played operators failed:\n" + "\n".join(played.errors)


def local_stack(
    stack: str,
    engine_dir: Path,
    kubeconfig: Path,
    *,
    home: str | None = None,
    source: Path = ROOT,
    **overrides: object,
) -> LocalStack:
    """One of the stacks of Tide's project (or of the project at `source`) with operators
    external, as `make up` runs it, on the harness."""
    return LocalStack(
        stack,
        engine_dir / (home or f"stack-{stack}"),
        source=source,
        overrides={"tide:operators": "external", **overrides},
        pulumi=engine.binary("pulumi"),
        path=(engine.tools_dir(),),
        extra_env={
            "KUBECONFIG": str(kubeconfig),
            "PULUMI_HOME": str(engine_dir / "pulumi-home"),
            # Nothing is downloaded: the provider and language host are the ones built here.
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        },
    )


@dataclass(frozen=True)
class Deployed:
    """A stack `pulumi up` put on the harness cluster."""

    prefix: str
    # The harness cluster as kubectl's current context, as its user would have it.
    kubeconfig: Path

    @property
    def apps(self) -> str:
        return f"{self.prefix}-apps"

    @property
    def data(self) -> str:
        return f"{self.prefix}-data"

    @property
    def monitoring(self) -> str:
        return f"{self.prefix}-monitoring"


@pytest.fixture(scope="session")
def rabbitmq_operator(
    cluster: Cluster, cluster_api: ApiServer, engine_dir: Path
) -> Iterator[RabbitMQOperator]:
    """The RabbitMQ cluster operator, from its module, watching the operated stack's data."""
    operator = RabbitMQOperator(engine_dir / "rabbitmq-operator", kubeconfig=cluster.kubeconfig,
                                namespaces=(OPERATED_DATA,))  # fmt: skip
    rejected = cluster_api.apply_all(operator.manifests())
    assert not rejected, f"{operator.name}'s manifests refused:\n" + "\n".join(map(str, rejected))
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(scope="session")
def operated_stack(
    cluster: Cluster, cluster_api: ApiServer, engine_dir: Path, rabbitmq_operator: RabbitMQOperator
) -> Deployed:
    """The kind stack, operators external, deployed as `make up` deploys it; its RabbitMQ
    cluster reconciled by the real operator."""
    kubeconfig = stack_kubeconfig(cluster, engine_dir / "kubeconfig-operated")
    stack = local_stack("kind", engine_dir, kubeconfig, home="stack-operated", **{
        "tide:namespacePrefix": OPERATED,
        "tide:image": {"repository": "tide", "tag": "engine-1", "pullPolicy": "IfNotPresent"},
        "tide:exposure": OPERATED_EXPOSURE,
    })  # fmt: skip
    kind.pulumi_up(stack)
    return Deployed(prefix=OPERATED, kubeconfig=cluster.kubeconfig)
