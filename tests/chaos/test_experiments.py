"""The local chaos suite: the platform as `tide run` processes on the harness brokers, one
fault at a time under API load; each experiment's report is printed in the summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ott.catalog import CATALOG
from tests.conftest import unique
from tests.reports import CHAOS, report
from tide.kafka.topics import ensure_topics
from tide.rabbitmq.definitions import definitions
from tide_dev import Brokers, BrokerSession
from tide_dev.chaos.experiments import EXPERIMENTS, Chaos, start_platform
from tide_dev.chaos.processes import LocalPlatform
from tide_dev.control import HarnessControl
from tide_dev.issuer import LocalIssuer

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def chaos(
    brokers: Brokers,
    broker_session: BrokerSession,
    database: str,
    issuer: LocalIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Chaos]:
    suffix = unique("x")
    catalog = CATALOG.isolated(suffix)
    client = {"bootstrap.servers": brokers.kafka_bootstrap}
    ensure_topics(client, catalog.all_topics())
    node = broker_session.own_rabbitmq("the experiments load the catalog into its node")
    node.import_definitions(definitions(catalog))
    workdir = tmp_path_factory.mktemp("chaos")
    # Each service as its own database role, as on a cluster.
    roles = broker_session.own_postgres("the services get roles of their own").service_roles(
        catalog
    )
    env = {**brokers.as_env(), "TIDE_CATALOG_SUFFIX": suffix}
    # The API takes tokens only, as on a cluster: the load sends one.
    platform = LocalPlatform(env, workdir, env_of=roles, issuer=issuer)
    experiment = Chaos(platform, catalog, client, database, HarnessControl(broker_session))
    try:
        start_platform(experiment)
        yield experiment
    finally:
        problems = platform.stop()
    assert not problems, f"services did not drain on SIGTERM (logs in {workdir}): {problems}"


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_holds(chaos: Chaos, name: str) -> None:
    outcome = EXPERIMENTS[name](chaos)
    report(CHAOS, outcome.render())
    assert outcome.held, "\n" + outcome.render()
