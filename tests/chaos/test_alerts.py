"""The deployed alert rules and dashboards, evaluated by a real Prometheus on real metrics.

The platform runs as `make local` runs it (tide_dev.local.LocalStack): every service under
supervision, `tide-dev kafka-exporter`, Kafka's JMX exporter agent, rabbitmq_prometheus, and
Prometheus loaded with `rule_groups(catalog)`, the groups the Pulumi program deploys.

The one test-only change is `infra.alerts.hastened`: every `for:` becomes FOR and every
range window WINDOW, so that an alert fires and resolves within a test's minute instead of
the production's five. Expressions, thresholds and labels are the deployed ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import pytest
from infra.alerts import hastened, rule_groups
from infra.dashboards import overview, service_page

from ott.catalog import CATALOG
from tests.conftest import unique
from tests.reports import CHAOS, report
from tide.metrics import AUTH_REFUSALS_SERIES
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev import Brokers, BrokerSession, HarnessError
from tide_dev.chaos.experiments import produce_poison
from tide_dev.chaos.probes import WATCH_TYPE
from tide_dev.local import LocalStack
from tide_dev.prometheus import PrometheusServer

INTERVAL = "1s"  # scrape and evaluation
FOR = "5s"
WINDOW = "20s"
RATE = 40.0  # watches per second posted to the API
FIRE_TIMEOUT_S = 150.0
RESOLVE_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def stack(
    brokers: Brokers, broker_session: BrokerSession, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    if broker_session.kafka is None or broker_session.rabbitmq is None:
        raise HarnessError(
            "Kafka and RabbitMQ",
            reason="the alert tests scrape the metrics endpoints of the brokers the harness "
            "started, and freeze Kafka",
            fix="unset TIDE_KAFKA_BOOTSTRAP and TIDE_RABBITMQ_URL",
        )
    suffix = unique("mon")
    catalog = CATALOG.isolated(suffix)
    platform = LocalStack(
        broker_session,
        brokers,
        tmp_path_factory.mktemp("local-stack"),
        catalog_suffix=suffix,
        interval=INTERVAL,
        rules=hastened(rule_groups(catalog), for_=FOR, window=WINDOW),
        rate=RATE,
    )
    try:
        platform.start()
        yield platform
    finally:
        platform.stop()


def _prometheus(stack: LocalStack) -> PrometheusServer:
    assert stack.prometheus is not None
    return stack.prometheus


def _selectors(expr: str) -> list[str]:
    """Every vector selector in a PromQL expression, as text (`name{label="v"}`)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node.prettify())
            return
        if isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
            return
        for attribute in ("lhs", "rhs", "expr"):
            if hasattr(node, attribute):
                walk(getattr(node, attribute))
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return found


def _deployed_expressions(catalog: Catalog) -> dict[str, str]:
    """What the program ships: every rule's expression and every dashboard panel's query."""
    found = {
        f"rule {rule['alert']} ({group['name']})": rule["expr"]
        for group in rule_groups(catalog)
        for rule in group["rules"]
    }
    dashboards = [overview(catalog)] + [service_page(catalog, s.name) for s in catalog.services]
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found[f"dashboard {dashboard['uid']} / {panel['title']}"] = target["expr"]
    return found


def test_prometheus_scrapes_every_service_and_exporter(stack: LocalStack) -> None:
    prometheus = _prometheus(stack)
    jobs = {"tide-services", "kafka-exporter", "kafka", "rabbitmq", "postgres"}
    seen: list[dict[str, Any]] = []

    def all_up() -> bool:
        seen[:] = prometheus.targets()
        return {t["labels"]["job"] for t in seen} == jobs and all(t["health"] == "up" for t in seen)

    with contextlib.suppress(TimeoutError):
        wait_until(all_up, timeout=60, what="every scrape target up")
    down = [
        f"{t['labels']['job']} {t['scrapeUrl']}: {t['health']} {t['lastError']}"
        for t in seen
        if t["health"] != "up"
    ]
    assert not down, down
    assert {t["labels"]["job"] for t in seen} == jobs
    assert {t["labels"].get("service") for t in seen} >= {s.name for s in stack.catalog.services}


_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}


def _queries(expr: str) -> list[str]:
    """What of a rule's expression must return series while the platform works: the
    expression without its thresholds (a comparison holds only under a fault), each side
    of an `and` on its own."""

    def parts(node: Any) -> list[str]:
        if isinstance(node, promql_parser.ParenExpr):
            return parts(node.expr)
        if isinstance(node, promql_parser.BinaryExpr):
            if str(node.op) in {"and", "or", "unless"}:
                return parts(node.lhs) + parts(node.rhs)
            if str(node.op) in _COMPARISONS and isinstance(node.rhs, promql_parser.NumberLiteral):
                return parts(node.lhs)
        return [" ".join(node.prettify().split())]  # prettify() breaks long ones over lines

    return parts(promql_parser.parse(expr))


def test_every_rule_and_dashboard_query_returns_series(stack: LocalStack) -> None:
    prometheus = _prometheus(stack)
    wanted = {
        query: where
        for where, expr in _deployed_expressions(stack.catalog).items()
        for query in (_queries(expr) if where.startswith("rule ") else [expr])
    }
    assert len(wanted) > 40, wanted  # every rule and panel gave its queries

    missing = dict(wanted)

    def all_found() -> bool:
        # Counters appear with the first event they count: the workload gets its time.
        nonlocal missing
        missing = {q: where for q, where in missing.items() if not prometheus.query(q)}
        return not missing

    with contextlib.suppress(TimeoutError):
        wait_until(all_found, timeout=90, what="series for every query", interval=1)

    def why(query: str) -> str:
        empty = [s for s in _selectors(query) if not prometheus.query(s)]
        return f"selectors with no series: {empty}" if empty else "every selector has series"

    assert not missing, "queries that return no series:\n" + "\n".join(
        f"  {q}\n    in {where}; {why(q)}" for q, where in missing.items()
    )


def _alerts(prometheus: PrometheusServer, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prometheus.alerts()
        if a["labels"]["alertname"] == name and labels.items() <= a["labels"].items()
    ]


def _firing(prometheus: PrometheusServer, name: str, **labels: str) -> bool:
    return any(a["state"] == "firing" for a in _alerts(prometheus, name, **labels))


def _wait_firing(prometheus: PrometheusServer, since: float, name: str, **labels: str) -> float:
    """Seconds from `since` until the alert fires."""
    wait_until(
        lambda: _firing(prometheus, name, **labels),
        timeout=FIRE_TIMEOUT_S,
        what=f"{name} {labels} firing",
        interval=0.5,
    )
    return time.monotonic() - since


def _wait_resolved(prometheus: PrometheusServer, since: float, name: str, **labels: str) -> float:
    wait_until(
        lambda: not _alerts(prometheus, name, **labels),
        timeout=RESOLVE_TIMEOUT_S,
        what=f"{name} {labels} resolved",
        interval=0.5,
    )
    return time.monotonic() - since


def _report(fault: str, timings: dict[str, float]) -> None:
    report(
        CHAOS,
        f"alerts on real metrics ({INTERVAL} scrape, for {FOR}, windows {WINDOW}): {fault}: "
        + ", ".join(f"{what} {seconds:.1f}s" for what, seconds in timings.items()),
    )


def _watch_reader(catalog: Catalog) -> ConsumerGroup:
    """A group that reads the watches the workload posts, always has members, and pages at
    the default lag."""
    topic = str(catalog.event(WATCH_TYPE).topic)
    readers = [
        g for g in catalog.consumer_groups if topic in g.topics and g.autoscaling.min_replicas > 0
    ]
    return min(readers, key=lambda g: g.alerting.max_lag)


def test_a_stopped_group_fires_its_lag_and_no_members_alerts_then_both_resolve(
    stack: LocalStack,
) -> None:
    prometheus = _prometheus(stack)
    group = _watch_reader(stack.catalog)
    labels = {"consumergroup": group.name}
    assert not _alerts(prometheus, "TideConsumerGroupLagHigh", **labels)
    stopped = time.monotonic()
    assert stack.hold(group.service) >= 1
    try:
        timings = {
            "no members fired": _wait_firing(
                prometheus, stopped, "TideConsumerGroupNoMembers", **labels
            ),
            "lag fired": _wait_firing(prometheus, stopped, "TideConsumerGroupLagHigh", **labels),
        }
    finally:
        restarted = time.monotonic()
        stack.release(group.service)  # the next tests share this platform
    timings["no members resolved"] = _wait_resolved(
        prometheus, restarted, "TideConsumerGroupNoMembers", **labels
    )
    timings["lag resolved"] = _wait_resolved(
        prometheus, restarted, "TideConsumerGroupLagHigh", **labels
    )
    _report(
        f"{group.service} stopped under {RATE:g} watches/s (max_lag {group.alerting.max_lag})",
        timings,
    )


def test_poison_records_fire_the_dead_letter_alert_of_every_reader_then_it_resolves(
    stack: LocalStack,
) -> None:
    prometheus = _prometheus(stack)
    catalog = stack.catalog
    topic = str(catalog.event(WATCH_TYPE).topic)
    readers = [g.name for g in catalog.consumer_groups if topic in g.topics]
    sent = time.monotonic()
    produce_poison(stack.settings.kafka_client_config(), catalog, topic, 30)
    timings = {
        f"{name} fired": _wait_firing(
            prometheus, sent, "TideDeadLettersGrowing", consumergroup=name
        )
        for name in readers
    }
    timings |= {
        f"{name} resolved": _wait_resolved(
            prometheus, sent, "TideDeadLettersGrowing", consumergroup=name
        )
        for name in readers
    }
    _report(f"30 poison records on {topic}", timings)


def test_kafka_taken_from_the_api_fires_the_publish_failure_alert_then_it_resolves(
    stack: LocalStack,
) -> None:
    prometheus = _prometheus(stack)
    kafka = stack.session.kafka
    assert kafka is not None
    assert not _alerts(prometheus, "TidePublishFailures")
    frozen = time.monotonic()
    kafka.freeze()  # it takes connections and answers nothing: every publish times out
    try:
        fired = _wait_firing(prometheus, frozen, "TidePublishFailures", event_type=WATCH_TYPE)
    finally:
        kafka.thaw()
    thawed = time.monotonic()
    resolved = _wait_resolved(prometheus, thawed, "TidePublishFailures")
    _report(
        "Kafka frozen under the API's load",
        {"publish failures fired": fired, "resolved after thaw": resolved},
    )
    # The platform came back: the API accepts again.
    wait_until(
        lambda: stack.load is not None and _accepting(stack),
        timeout=60,
        what="the API accepting again after the thaw",
    )


def _accepting(stack: LocalStack) -> bool:
    prometheus = _prometheus(stack)
    rows = prometheus.query(
        f'sum(rate(tide_api_request_duration_seconds_count{{service="{stack.api_service}",'
        f'status="202"}}[{WINDOW}]))'
    )
    return bool(rows) and float(rows[0]["value"][1]) > 0


def test_an_api_started_while_the_issuer_is_down_fires_the_issuer_alert_then_it_resolves(
    stack: LocalStack,
) -> None:
    """A real outage of the token issuer: the API restarted while its JWKS cannot be
    fetched holds no signing key, so every bearer token of the load is answered 503 (the
    outage is not the client's fault) and TideApiIssuerUnreachable fires; once the issuer
    answers again the API fetches its keys, takes the load again, and the alert resolves.
    (An API that already holds keys keeps serving them for an hour of outage: starting
    without them is the outage an alert must catch.)"""
    prometheus = _prometheus(stack)
    issuer, api = stack.issuer, stack.api_service
    assert not _alerts(prometheus, "TideApiIssuerUnreachable")
    port = urlsplit(issuer.jwks_url).port  # where the API will look for it again
    assert port is not None
    assert stack.hold(api) >= 1
    issuer.stop()
    try:
        stack.release(api)  # ready: its probes need PostgreSQL and Kafka, not the issuer
        started = time.monotonic()
        fired = _wait_firing(prometheus, started, "TideApiIssuerUnreachable")
        refused = prometheus.query(
            f'sum(increase({AUTH_REFUSALS_SERIES}{{service="{api}",status="503"}}[{WINDOW}]))'
        )
        assert refused, "no 503 counted"
        assert float(refused[0]["value"][1]) > 0, refused
    finally:
        issuer.start(port=port)
    back = time.monotonic()
    resolved = _wait_resolved(prometheus, back, "TideApiIssuerUnreachable")
    wait_until(lambda: _accepting(stack), timeout=60, what="the API accepting tokens again")
    _report(
        f"{api} started while the issuer's JWKS was down, under the load's bearer tokens",
        {"issuer unreachable fired": fired, "resolved after the issuer returned": resolved},
    )
