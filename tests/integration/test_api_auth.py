"""Both APIs behind credentials, on real Kafka and PostgreSQL: a refused request leaves no
trace in either, and an accepted one records who sent it on its events."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from ott import subscription, video_service
from tests.conftest import unique
from tests.runtime_fixtures import jwt_guard
from tide.auth import API_KEY_HEADER, AuthMode, api_keys_json, guard_from, new_api_key
from tide.codecs.json_schema import EventCodec
from tide.kafka.producer import EventPublisher
from tide.kafka.transient import retrying
from tide.topology import Catalog
from tide_dev import Brokers, BrokerSession
from tide_dev.issuer import LocalIssuer

pytestmark = pytest.mark.timeout(180)

DATA = {"user_id": "u1", "video_id": "v1", "session_id": "s1", "device": "web"}
WATCH: dict[str, object] = {"type": "video.watch.started", "data": DATA}


def _publisher(brokers: Brokers, catalog: Catalog) -> EventPublisher:
    return EventPublisher(
        {"bootstrap.servers": brokers.kafka_bootstrap}, EventCodec(catalog), timeout_s=10
    )


def _end_offsets(brokers: Brokers, topic: str) -> list[int]:
    probe = Consumer({"bootstrap.servers": brokers.kafka_bootstrap, "group.id": unique("probe")})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        # A topic made for this test may have no leader yet: asked again until it has.
        return [
            retrying(lambda p=p: probe.get_watermark_offsets(TopicPartition(topic, p), 10), 30)[1]
            for p in sorted(partitions)
        ]
    finally:
        probe.close()


def _headers_at(
    consumer: Callable[..., Consumer], topic: str, partition: int, offset: int
) -> dict[str, str]:
    reader = consumer(unique("read"))
    reader.assign([TopicPartition(topic, partition, offset)])
    message = reader.poll(30)
    assert message is not None, "the accepted event is not there"
    assert message.error() is None
    return {k: v.decode() for k, v in message.headers() or []}


def test_a_refused_event_never_reaches_kafka_and_an_accepted_one_names_its_sender(
    brokers: Brokers,
    catalog: Catalog,
    issuer: LocalIssuer,
    consumer: Callable[..., Consumer],
) -> None:
    topic = catalog.event("video.watch.started").topic
    app = video_service.create_app(
        catalog, _publisher(brokers, catalog), max_body_bytes=4096, guard=jwt_guard(issuer)
    )
    before = _end_offsets(brokers, topic)
    with TestClient(app) as api:
        refused = {
            "no token": api.post("/v1/events", json=WATCH),
            "expired": api.post(
                "/v1/events",
                json=WATCH,
                headers=issuer.headers("p", ttl_s=-600),
            ),
            "no scope": api.post(
                "/v1/events",
                json=WATCH,
                headers=issuer.headers("p", ["subscriptions:read"]),
            ),
        }
        assert {why: r.status_code for why, r in refused.items()} == {
            "no token": 401,
            "expired": 401,
            "no scope": 403,
        }
        # Every refusal is answered before anything is sent: Kafka's ends did not move.
        assert _end_offsets(brokers, topic) == before

        token = issuer.token("player-app", ["events:write"])
        accepted = api.post("/v1/events", json=WATCH, headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 202, accepted.text
    where = accepted.json()
    headers = _headers_at(consumer, where["topic"], where["partition"], where["offset"])
    assert headers["ce_authtype"] == "service_account"
    assert headers["ce_authid"] == "player-app"


def test_one_callers_idempotency_key_neither_replays_nor_refuses_anothers(
    brokers: Brokers, catalog: Catalog
) -> None:
    one, one_entry = new_api_key("app-one", ["events:write"])
    two, two_entry = new_api_key("app-two", ["events:write"])
    guard = guard_from(AuthMode.API_KEYS, api_keys=api_keys_json([one_entry, two_entry]))
    app = video_service.create_app(
        catalog, _publisher(brokers, catalog), max_body_bytes=4096, guard=guard
    )
    with TestClient(app) as api:

        def send(
            key: str, body: dict[str, object], idempotency: str = "k-1"
        ) -> tuple[int, dict[str, object]]:
            answer = api.post(
                "/v1/events",
                json=body,
                headers={API_KEY_HEADER: key, "Idempotency-Key": idempotency},
            )
            return answer.status_code, answer.json()

        first = send(one, WATCH)
        same = send(two, WATCH)  # the same key and body: still app-two's own request
        other = send(two, {**WATCH, "data": {**DATA, "device": "tv"}}, "k-2")
        again = send(one, WATCH)
        # A header key that reads like a client's own event id is still the caller's key.
        owned = api.post("/v1/events", json={**WATCH, "id": "evt-1"}, headers={API_KEY_HEADER: one})
        lookalike = send(two, {**WATCH, "data": {**DATA, "device": "tv"}}, "id:evt-1")
    assert {first[0], other[0], same[0], again[0], owned.status_code, lookalike[0]} == {202}
    assert same[1]["id"] != first[1]["id"], "app-one's answer was replayed to app-two"
    assert other[1]["id"] not in (first[1]["id"], same[1]["id"])
    assert again[1] == first[1]
    assert lookalike[1]["id"] != "evt-1"


def test_subscription_commands_need_their_scope_and_record_who_ran_them(
    brokers: Brokers,
    broker_session: BrokerSession,
    catalog: Catalog,
    database: str,
    issuer: LocalIssuer,
) -> None:
    roles = broker_session.own_postgres("the service runs as its role").service_roles(catalog)
    dsn = roles["subscription"]["TIDE_POSTGRES_DSN"]
    app = subscription.create_app(
        dsn, _publisher(brokers, catalog), relay=False, guard=jwt_guard(issuer)
    )
    sub = unique("sub")
    start = f"/v1/subscriptions/{sub}/start"
    body = {"user_id": "u7", "plan": "basic"}
    reader = issuer.headers("support", ["subscriptions:read"])
    writer = issuer.headers("u7", client=False)
    with TestClient(app) as api:
        assert api.post(start, json=body).status_code == 401
        assert api.post(start, json=body, headers=reader).status_code == 403
        # A malformed id from a stranger is refused for who they are, not for the id.
        assert api.post("/v1/subscriptions/%20/start", json=body).status_code == 401
        with psycopg.connect(database) as conn:
            stored = conn.execute("SELECT count(*) FROM events WHERE stream_id = %s", (sub,))
            assert stored.fetchone() == (0,), "a refused command wrote events"

        started = api.post(start, json=body, headers=writer)
        assert started.status_code == 200, started.text
        assert api.get(f"/v1/subscriptions/{sub}").status_code == 401
        read = api.get(f"/v1/subscriptions/{sub}", headers=reader)
        assert read.status_code == 200
        assert read.json()["status"] == "active"
        assert api.post(f"/v1/subscriptions/{sub}/cancel", headers=reader).status_code == 403
    with psycopg.connect(database) as conn:
        recorded = conn.execute(
            "SELECT type, metadata->>'authtype', metadata->>'authid' FROM events"
            " WHERE stream_id = %s ORDER BY version",
            (sub,),
        ).fetchall()
    assert recorded == [
        ("subscription.started", "user", "u7"),
        ("payment.captured", "user", "u7"),
    ]


def test_a_user_acts_on_their_own_subscriptions_and_a_service_on_anyones(
    broker_session: BrokerSession, brokers: Brokers, catalog: Catalog, issuer: LocalIssuer
) -> None:
    """A user's token starts a subscription for that user only; another user's
    subscription, to it, does not exist. A service's token acts for every user."""
    roles = broker_session.own_postgres("the service runs as its role").service_roles(catalog)
    app = subscription.create_app(
        roles["subscription"]["TIDE_POSTGRES_DSN"],
        _publisher(brokers, catalog),
        relay=False,
        guard=jwt_guard(issuer),
    )
    ada, bob = issuer.headers("ada", client=False), issuer.headers("bob", client=False)
    billing = issuer.headers("billing")  # a client acting for itself
    mine, theirs = unique("sub-ada"), unique("sub-bob")
    with TestClient(app) as api:

        def start(sub: str, user: str, headers: dict[str, str]) -> httpx.Response:
            body = {"user_id": user, "plan": "basic"}
            return api.post(f"/v1/subscriptions/{sub}/start", json=body, headers=headers)

        as_bob = start(theirs, "bob", ada)
        assert as_bob.status_code == 403, as_bob.text
        assert as_bob.json() == {
            "error": "forbidden",
            "detail": "user 'ada' may start a subscription for itself only",
        }
        for sub, user, headers in ((mine, "ada", ada), (theirs, "bob", bob)):
            started = start(sub, user, headers)
            assert started.status_code == 200, started.text

        # To ada, bob's subscription is not there: not to read, renew or cancel.
        assert api.get(f"/v1/subscriptions/{theirs}", headers=ada).status_code == 404
        for action in ("renew", "cancel"):
            refused = api.post(f"/v1/subscriptions/{theirs}/{action}", headers=ada)
            assert refused.status_code == 404, refused.text
        # Nor may she take its id: she learns it is taken, not whose it is.
        taken = start(theirs, "ada", ada)
        assert taken.status_code == 409, taken.text
        assert taken.json() == {
            "error": "rejected",
            "detail": f"subscription {theirs!r} already exists",
        }
        assert api.get(f"/v1/subscriptions/{theirs}", headers=bob).json()["payments"] == 1

        assert api.post(f"/v1/subscriptions/{mine}/renew", headers=ada).status_code == 200
        # The billing service renews and reads anyone's.
        renewed = api.post(f"/v1/subscriptions/{theirs}/renew", headers=billing)
        assert renewed.status_code == 200, renewed.text
        assert api.get(f"/v1/subscriptions/{theirs}", headers=billing).json()["payments"] == 2
