"""The catalog loads only when its rules hold, and every error names the entry and the rule."""

from __future__ import annotations

import jsonschema
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from ott.catalog import CATALOG
from tide.errors import PLATFORM_ERRORS
from tide.events.schemas import schema
from tide.store.grants import DELETE, INSERT, READ_WRITE, SELECT, UPDATE, privileges
from tide.topology import Autoscaling, Catalog, ConsumerGroup, RetryPolicy, Topic


def _with(**changes: object) -> dict[str, object]:
    data = CATALOG.model_dump()
    data.update(changes)
    return data


def test_reference_catalog_loads_and_derives_retry_and_dlq_topics() -> None:
    group = CATALOG.group("recommendation")
    assert group.retry_topics == (
        "recommendation.retry.1s",
        "recommendation.retry.10s",
        "recommendation.retry.60s",
    )
    assert group.dlq_topic == "recommendation.dlq"
    assert group.retry.max_attempts == 4
    assert "recommendation.dlq" in CATALOG.all_topic_names()


def test_every_group_scales_within_its_topics_partitions() -> None:
    for group in CATALOG.consumer_groups:
        partitions = min(CATALOG.topic(t).partitions for t in group.topics)
        assert group.autoscaling.max_replicas <= partitions, group.name


def test_every_event_type_has_a_valid_json_schema_file() -> None:
    for event in CATALOG.events:
        jsonschema.Draft7Validator.check_schema(schema(event))
        assert event.key in schema(event)["required"], f"{event.type}: key must be required"


def test_max_replicas_beyond_partitions_is_refused_naming_group_and_topic() -> None:
    groups = [g.model_dump() for g in CATALOG.consumer_groups]
    groups[0]["autoscaling"]["max_replicas"] = 12
    with pytest.raises(ValidationError) as caught:
        Catalog.model_validate(_with(consumer_groups=groups))
    message = str(caught.value)
    assert "consumer group 'recommendation': max_replicas 12 exceeds the 3 partitions" in message
    assert "topic 'content-events'" in message


def test_unknown_topic_and_service_are_each_named() -> None:
    groups = [g.model_dump() for g in CATALOG.consumer_groups]
    groups[1]["topics"] = ("video-evnts",)
    groups[1]["service"] = "personalisation"
    with pytest.raises(ValidationError) as caught:
        Catalog.model_validate(_with(consumer_groups=groups))
    message = str(caught.value)
    assert "consumer group 'personalization': topic 'video-evnts' is not in the catalog" in message
    assert (
        "consumer group 'personalization': service 'personalisation' is not in the catalog"
        in message
    )


def test_duplicate_topic_is_refused() -> None:
    topics = [t.model_dump() for t in CATALOG.topics]
    topics.append(topics[0])
    with pytest.raises(ValidationError, match="topic 'user-events' is declared more than once"):
        Catalog.model_validate(_with(topics=topics))


def test_a_queue_named_like_a_group_or_worked_twice_is_refused() -> None:
    # Marks are kept by group name or queue name: each must be one consumer's alone.
    queues = [q.model_dump() for q in CATALOG.queues]
    queues.append({**queues[0], "name": "badges"})
    bindings = [b.model_dump() for b in CATALOG.bindings]
    bindings.append({**bindings[0], "queue": "badges"})
    workers = [w.model_dump() for w in CATALOG.queue_workers]
    workers += [{**workers[0], "queue": "badges"}, workers[0]]
    with pytest.raises(ValidationError) as refused:
        Catalog.model_validate(_with(queues=queues, bindings=bindings, queue_workers=workers))
    message = str(refused.value)
    assert "queue 'badges' and consumer group 'badges' share a name" in message
    assert "queue 'notifications' has more than one queue worker" in message


def test_an_http_port_on_the_metrics_port_is_refused() -> None:
    services = [s.model_dump() for s in CATALOG.services]
    services[0]["http_port"] = 9464
    with pytest.raises(ValidationError, match="http_port 9464 is where /metrics is served"):
        Catalog.model_validate(_with(services=services))


def test_consumer_service_without_a_group_is_refused() -> None:
    groups = [g.model_dump() for g in CATALOG.consumer_groups if g.name != "badges"]
    with pytest.raises(
        ValidationError, match="service 'badges': role consumer but no consumer group"
    ):
        Catalog.model_validate(_with(consumer_groups=groups))


def test_retry_delays_must_increase() -> None:
    with pytest.raises(ValidationError, match="strictly increasing"):
        RetryPolicy(delays_s=(10, 1))


def test_min_above_max_replicas_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_replicas 4 exceeds max_replicas 2"):
        Autoscaling(min_replicas=4, max_replicas=2)


def test_unknown_field_is_refused_so_typos_fail_loudly() -> None:
    with pytest.raises(ValidationError, match="max_replica"):
        Autoscaling.model_validate({"max_replicas": 2, "max_replica": 3})


def test_lookup_of_unknown_service_lists_known_ones() -> None:
    with pytest.raises(LookupError) as caught:
        CATALOG.service("recomendation")
    assert "unknown service 'recomendation'" in str(caught.value)
    assert "recommendation" in str(caught.value).split("known:")[1]


@given(st.text(min_size=1, max_size=80))
def test_names_outside_kubernetes_rules_never_load(name: str) -> None:
    valid = (
        len(name) <= 40
        and name == name.lower()
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(c.isascii() and (c.isalnum() or c == "-") for c in name)
    )
    build = lambda: ConsumerGroup(  # noqa: E731 - one expression, used twice
        name=name,
        service="x",
        topics=("t",),
        handler="m:f",
        autoscaling=Autoscaling(max_replicas=1),
    )
    if valid:
        assert build().dlq_topic == f"{name}.dlq"
    else:
        with pytest.raises(ValidationError):
            build()


@given(st.text(min_size=1, max_size=60))
def test_topic_names_follow_kafka_and_kubernetes_rules(name: str) -> None:
    valid = (
        name == name.lower()
        and name[0].isalnum()
        and name[-1].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "-.") for c in name)
    )
    if valid:
        assert Topic(name=name, partitions=1, retention_ms=60_000).name == name
    else:
        with pytest.raises(ValidationError):
            Topic(name=name, partitions=1, retention_ms=60_000)


def _services_with_tables(**tables: tuple[str, ...]) -> list[dict[str, object]]:
    services = [s.model_dump() for s in CATALOG.services]
    for service in services:
        if service["name"] in tables:
            service["tables"] = tables[str(service["name"])]
    return services


def test_a_table_two_services_list_is_refused_naming_both() -> None:
    services = _services_with_tables(analytics=("viewing_sessions", "viewer_profiles"))
    with pytest.raises(ValidationError) as caught:
        Catalog.model_validate(_with(services=services))
    assert (
        "table 'viewer_profiles': listed by 'personalization' and 'analytics';"
        " one service owns a table" in str(caught.value)
    )


@pytest.mark.parametrize("name", ["Profiles", "9lives", "viewer-profiles", "x" * 64])
def test_table_names_are_what_a_migration_writes_unquoted(name: str) -> None:
    services = _services_with_tables(analytics=(name,))
    with pytest.raises(ValidationError, match="is not a table name as migrations write them"):
        Catalog.model_validate(_with(services=services))


def test_a_table_privilege_sql_has_no_name_for_is_refused() -> None:
    services = _services_with_tables(
        analytics=({"name": "viewing_sessions", "privileges": ["select", "truncate"]},)  # type: ignore[arg-type]
    )
    with pytest.raises(
        ValidationError, match=r"privileges\.1\n  Input should be 'select', 'insert'"
    ):
        Catalog.model_validate(_with(services=services))


def test_a_service_given_a_platform_table_gets_no_role_grants() -> None:
    catalog = Catalog.model_validate(
        _with(services=_services_with_tables(analytics=("viewing_sessions", "events")))
    )
    with pytest.raises(ValueError, match=r"service 'analytics': tables \['events'\] are the"):
        privileges(catalog, "analytics")


def test_each_role_is_granted_its_tables_and_the_platforms_it_uses() -> None:
    # The row policy on the marks reads whose consumer a row is.
    marks = {"processed_events": (SELECT, INSERT, DELETE), "processed_event_owners": (SELECT,)}
    # Upserts only: the catalog gives it no DELETE on its profiles.
    upserts = (SELECT, INSERT, UPDATE)
    assert privileges(CATALOG, "personalization") == marks | {"viewer_profiles": upserts}
    assert privileges(CATALOG, "badges") == marks | {"completions": upserts, "badges": (INSERT,)}
    assert privileges(CATALOG, "analytics")["viewing_sessions"] == READ_WRITE  # named alone
    assert privileges(CATALOG, "notification-dispatch") == marks
    store = privileges(CATALOG, "subscription")
    assert store["events"] == (SELECT, INSERT), "an event store never rewrites its events"
    assert store["subscription_overview"] == READ_WRITE
    assert "processed_events" not in store
    assert privileges(CATALOG, "video-service") == {}
    assert CATALOG.consumers_of("notification-dispatch") == ("notification-dispatch",)
    assert CATALOG.consumers_of("notification-worker") == ("notifications",)


@pytest.mark.parametrize("name", ["tide", "registry", "postgres", "public"])
def test_a_service_whose_role_would_be_reserved_is_refused_grants(name: str) -> None:
    services = [s.model_dump() for s in CATALOG.services]
    services[[s["name"] for s in services].index("analytics")]["name"] = name
    groups = [g.model_dump() for g in CATALOG.consumer_groups]
    for group in groups:
        if group["service"] == "analytics":
            group["service"] = name
    catalog = Catalog.model_validate(_with(services=services, consumer_groups=groups))
    with pytest.raises(ValueError, match=f"its PostgreSQL role would be reserved name '{name}'"):
        privileges(catalog, name)


def test_a_role_lacking_a_privilege_is_waited_out_not_dead_lettered() -> None:
    # A missing grant is the deployment's fault (a table moved to another service while
    # this one's pods still roll), so the runners keep the record where it is.
    assert issubclass(psycopg.errors.InsufficientPrivilege, PLATFORM_ERRORS)
