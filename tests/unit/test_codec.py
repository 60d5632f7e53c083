"""Events are validated at the producer with errors that name the field, and round-trip."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ott.catalog import CATALOG
from tide.codecs.json_schema import (
    EventCodec,
    InvalidEventError,
    UndecodableRecordError,
    UnknownEventTypeError,
    validate,
)
from tide.events.envelope import CloudEvent
from tide.events.schemas import schema
from tide.topology import EventType


def rated(**data: object) -> CloudEvent:
    payload: dict[str, object] = {"user_id": "u1", "video_id": "v1", "rating": 4}
    payload.update(data)
    return CloudEvent(type="video.rated", source="/test", data=payload)


@pytest.fixture(params=["plain", "registry"])
def codec(request: pytest.FixtureRequest) -> EventCodec:
    # "registry" uses confluent-kafka's in-process mock registry: unit tests only.
    url = "mock://tide-unit" if request.param == "registry" else ""
    return EventCodec(CATALOG, url)


def test_event_round_trips_with_its_envelope(codec: EventCodec) -> None:
    event = rated()
    encoded = codec.encode(event)
    assert encoded.topic == "video-events"
    assert encoded.key == b"u1"
    decoded = codec.decode(encoded.topic, encoded.value, encoded.headers)
    assert decoded.id == event.id
    assert decoded.data == event.data
    assert decoded.correlationid == event.id
    assert decoded.dataschema == "tide:video.rated/v1"


def test_registry_values_use_the_confluent_wire_format() -> None:
    encoded = EventCodec(CATALOG, "mock://tide-wire").encode(rated())
    assert encoded.value[0] == 0
    assert json.loads(encoded.value[5:]) == {"user_id": "u1", "video_id": "v1", "rating": 4}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rating": 7}, "video.rated: field 'rating': 7 is greater than the maximum of 5"),
        ({"rating": "five"}, "video.rated: field 'rating': 'five' is not of type 'integer'"),
        ({"user_id": ""}, "video.rated: field 'user_id'"),
        ({"extra": 1}, "Additional properties are not allowed ('extra' was unexpected)"),
        # Past 2**64 a JSON integer came back from Kafka as a float (1e+30).
        ({"rating": 10**30}, "video.rated: field 'rating': 10000000000000000000000000000"),
    ],
)
def test_invalid_event_is_refused_naming_the_field(
    codec: EventCodec, data: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        codec.encode(rated(**data))
    assert message in str(caught.value)


def test_missing_field_is_named(codec: EventCodec) -> None:
    event = CloudEvent(type="video.rated", source="/t", data={"user_id": "u", "video_id": "v"})
    with pytest.raises(
        InvalidEventError, match=re.escape("video.rated: field 'rating': is required")
    ):
        codec.encode(event)


def test_unknown_type_is_refused_listing_known_ones(codec: EventCodec) -> None:
    with pytest.raises(
        UnknownEventTypeError, match=re.escape("unknown event type 'video.paused'; known: ")
    ):
        codec.encode(CloudEvent(type="video.paused", source="/t", data={}))


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"", [], "empty record value"),
        (b"{not json", [], "value is not JSON"),
        (b"[1, 2]", [], "value is JSON list, not an object"),
        (b'{"user_id": "u"}', [], "missing CloudEvents attribute 'id'"),
        (b"\x00\x00\x00\x00\x01{}", [], "no registry is configured"),
    ],
)
def test_undecodable_records_say_why(
    value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(UndecodableRecordError, match=reason):
        EventCodec(CATALOG).decode("video-events", value, headers)


def test_record_valid_json_but_schema_invalid_is_undecodable() -> None:
    codec = EventCodec(CATALOG)
    good = codec.encode(rated())
    bad = json.dumps({"user_id": "u1", "video_id": "v1", "rating": 9}).encode()
    with pytest.raises(UndecodableRecordError, match="field 'rating'"):
        codec.decode(good.topic, bad, good.headers)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoder(value: bytes) -> None:
    with contextlib.suppress(UndecodableRecordError):
        EventCodec(CATALOG).decode("video-events", value, [])


def test_a_header_that_is_not_utf8_is_undecodable_naming_it() -> None:
    codec = EventCodec(CATALOG)
    good = codec.encode(rated())
    headers = [(k, b"\xff\xfe" if k == "ce_id" else v) for k, v in good.headers]
    with pytest.raises(UndecodableRecordError, match="header 'ce_id' is not UTF-8"):
        codec.decode(good.topic, good.value, headers)


@given(st.sampled_from(["ce_id", "ce_type", "ce_source", "content-type"]), st.binary(max_size=40))
def test_arbitrary_header_bytes_never_crash_the_decoder(header: str, value: bytes) -> None:
    """A consumer must route any record it cannot read to the DLQ, never crash on it."""
    codec = EventCodec(CATALOG)
    good = codec.encode(rated())
    headers = [(k, value if k == header else v) for k, v in good.headers]
    with contextlib.suppress(UndecodableRecordError):
        codec.decode(good.topic, good.value, headers)


def test_caused_events_have_stable_ids_and_carry_the_chain() -> None:
    cause = rated()
    first = cause.caused("recommendation.generated", "/recommendation", {"user_id": "u1"})
    again = cause.caused("recommendation.generated", "/recommendation", {"user_id": "u1"})
    assert first.id == again.id != cause.id
    assert first.causationid == cause.id
    assert first.correlationid == cause.correlationid == cause.id


def test_isolated_catalog_renames_topics_and_groups_consistently() -> None:
    copy = CATALOG.isolated("t1")
    assert copy.event("video.rated").topic == "video-events-t1"
    group = copy.group("recommendation-t1")
    assert group.topics == ("video-events-t1", "content-events-t1")
    assert group.dlq_topic == "recommendation-t1.dlq"


def test_validation_never_changes_the_event(codec: EventCodec) -> None:
    # The schema has a default for position_s; a validator must not fill it in.
    data = {"user_id": "u", "video_id": "v", "session_id": "s", "device": "tv"}
    event = CloudEvent(type="video.watch.started", source="/t", data=data)
    encoded = codec.encode(event)
    assert codec.decode(encoded.topic, encoded.value, encoded.headers).data == data
    assert "position_s" not in data


# One valid event of each type: a failure below is then the newline's, nothing else's.
VALID = {
    "video.watch.started": {"user_id": "u", "video_id": "v", "session_id": "s", "device": "tv"},
    "video.watch.completed": {
        "user_id": "u",
        "video_id": "v",
        "session_id": "s",
        "watched_s": 1,
        "finished": True,
    },
    "video.quality.changed": {
        "user_id": "u",
        "video_id": "v",
        "session_id": "s",
        "quality": "720p",
    },
    "video.rated": {"user_id": "u", "video_id": "v", "rating": 4},
    "video.heartbeat": {
        "user_id": "u",
        "video_id": "v",
        "session_id": "s",
        "position_s": 3,
        "quality": "720p",
    },
    "content.published": {"video_id": "v", "title": "t", "genres": []},
    "recommendation.generated": {"user_id": "u", "video_ids": ["v"], "reason": "r"},
    "notification.requested": {"user_id": "u", "channel": "push", "title": "t", "video_ids": ["v"]},
    "payment.captured": {
        "subscription_id": "s",
        "user_id": "u",
        "plan": "basic",
        "amount_cents": 1,
        "currency": "EUR",
    },
}


def _pattern_fields() -> list[tuple[str, str]]:
    return [
        (event.type, name)
        for event in CATALOG.events
        for name, spec in schema(event)["properties"].items()
        if "pattern" in spec
    ]


def test_every_event_type_has_a_valid_example() -> None:
    assert set(VALID) == {e.type for e in CATALOG.events}
    for event_type, data in VALID.items():
        validate(CATALOG.event(event_type), data)


@pytest.mark.parametrize(("event_type", "field"), _pattern_fields())
def test_a_trailing_newline_never_passes_a_pattern(event_type: str, field: str) -> None:
    # jsonschema's `pattern` is Python's re.search, whose `$` matches before a final
    # newline; the compiled validator refuses it. The stricter answer stands.
    data = {**VALID[event_type], field: str(VALID[event_type][field]) + "\n"}
    with pytest.raises(InvalidEventError, match=re.escape(f"field '{field}'")):
        validate(CATALOG.event(event_type), data)


def _fixed(pattern: object) -> bool:
    """An anchored pattern with no open-ended repetition (`^[A-Z]{3}$`) bounds a length."""
    return (
        isinstance(pattern, str)
        and pattern.startswith("^")
        and pattern.endswith("$")
        and re.search(r"[+*]|\{\d+,\}", pattern) is None
    )


def _unbounded(node: object, path: str = "") -> list[str]:
    """Where a schema lets a value grow without limit."""
    if isinstance(node, list):
        return [p for i, item in enumerate(node) for p in _unbounded(item, f"{path}[{i}]")]
    if not isinstance(node, dict):
        return []
    found = [p for key, value in node.items() for p in _unbounded(value, f"{path}/{key}")]
    kind = node.get("type")
    if "enum" in node or "const" in node:
        return found
    if kind in ("integer", "number") and not {"minimum", "maximum"} <= node.keys():
        found.append(f"{path}: a number without both bounds")
    if kind == "string" and "maxLength" not in node and not _fixed(node.get("pattern")):
        found.append(f"{path}: a string without maxLength")
    if kind == "array" and "maxItems" not in node:
        found.append(f"{path}: an array without maxItems")
    if kind == "object" and node.get("additionalProperties") is not False:
        found.append(f"{path}: an object open to any key")
    return found


@pytest.mark.parametrize("event", CATALOG.events, ids=lambda e: e.type)
def test_every_schema_bounds_every_field(event: EventType) -> None:
    # What the edge accepts must fit every consumer and store: a number without a maximum
    # overflowed a numeric column, a long string an AMQP header.
    assert _unbounded(schema(event)) == []
