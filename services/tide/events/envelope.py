"""The CloudEvents 1.0 envelope, carried in binary mode as Kafka (`ce_*`) and AMQP headers."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SPEC_VERSION = "1.0"
KAFKA_PREFIX = "ce_"
# The AMQP binding puts attributes in application properties with this prefix.
AMQP_PREFIX = "cloudEvents_"
CONTENT_TYPE = "application/json"
# Namespace of event ids derived from a cause, so a redelivered cause re-emits the same ids.
_DERIVED = uuid.UUID("6f1e2c4a-8d0b-4a53-9b8e-2f1d7c3e5a90")


def derived_id(cause: str, source: str, type_: str, index: int = 0) -> str:
    """The id of the `index`th `type_` event that `source` emitted because of event `cause`:
    the same every time, so a re-run handler's events dedupe (and a watcher can predict it)."""
    return str(uuid.uuid5(_DERIVED, f"{cause}:{source}:{type_}:{index}"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class EnvelopeError(ValueError):
    """Headers do not form a CloudEvent; names the attribute."""


@dataclass(frozen=True, kw_only=True)
class CloudEvent:
    """One event: CloudEvents context attributes plus its JSON `data`."""

    type: str
    source: str
    data: Mapping[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=_now)
    subject: str | None = None
    dataschema: str | None = None
    datacontenttype: str = CONTENT_TYPE
    correlationid: str | None = None
    causationid: str | None = None
    # The CloudEvents authcontext extension: who sent the request this event records
    # (tide.auth.AuthType) and, when known, their id (a token's subject, a key's name).
    authtype: str | None = None
    authid: str | None = None
    specversion: str = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.correlationid is None:
            # A chain starts here: the first event correlates with itself.
            object.__setattr__(self, "correlationid", self.id)

    def caused(
        self, type_: str, source: str, data: Mapping[str, Any], index: int = 0
    ) -> CloudEvent:
        """An event this one caused: same correlation, this one as cause, an id derived from both.

        The derived id makes a re-run handler emit the same ids, which consumers dedupe.
        """
        return CloudEvent(
            type=type_,
            source=source,
            data=data,
            id=derived_id(self.id, source, type_, index),
            correlationid=self.correlationid,
            causationid=self.id,
        )

    def attributes(self) -> dict[str, str]:
        values = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "subject": self.subject,
            "dataschema": self.dataschema,
            "correlationid": self.correlationid,
            "causationid": self.causationid,
            "authtype": self.authtype,
            "authid": self.authid,
        }
        return {k: v for k, v in values.items() if v is not None}

    def kafka_headers(self, *, dataschema: str | None = None) -> list[tuple[str, bytes]]:
        """Binary-mode headers; `dataschema` stands in for an unset one (the codec stamps it
        without copying the event: this is on every publish)."""
        headers = [
            ("ce_specversion", self.specversion.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.encode()),
        ]
        for name, value in (
            ("ce_subject", self.subject),
            ("ce_dataschema", self.dataschema or dataschema),
            ("ce_correlationid", self.correlationid),
            ("ce_causationid", self.causationid),
            ("ce_authtype", self.authtype),
            ("ce_authid", self.authid),
        ):
            if value is not None:
                headers.append((name, value.encode()))
        # Binary mode: content-type is the Kafka-native header, not ce_datacontenttype.
        headers.append(("content-type", self.datacontenttype.encode()))
        return headers

    def amqp_headers(self, *, dataschema: str | None = None) -> dict[str, str]:
        headers = {f"{AMQP_PREFIX}{k}": v for k, v in self.attributes().items()}
        if self.dataschema is None and dataschema is not None:
            headers[f"{AMQP_PREFIX}dataschema"] = dataschema
        return headers

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str], data: Mapping[str, Any]) -> CloudEvent:
        return cls._checked({k: v for k, v in attributes.items() if k in _ATTRIBUTES}, data)

    @classmethod
    def _checked(cls, attributes: dict[str, str], data: Mapping[str, Any]) -> CloudEvent:
        for required in ("id", "source", "type", "specversion"):
            if not attributes.get(required):
                raise EnvelopeError(f"missing CloudEvents attribute {required!r}")
        if attributes["specversion"] != SPEC_VERSION:
            raise EnvelopeError(f"unsupported specversion {attributes['specversion']!r}")
        # What __init__ and __post_init__ would do, in one step: a frozen dataclass sets each
        # of its fields through object.__setattr__, and this runs for every record a
        # consumer reads (a third of decoding one, bench/). Every field is set either way.
        event = object.__new__(cls)
        fields = {**_UNSET, **attributes, "data": data}
        if "time" not in attributes:
            fields["time"] = _now()
        if fields["correlationid"] is None:
            fields["correlationid"] = fields["id"]
        event.__dict__.update(fields)
        return event

    @classmethod
    def from_kafka(
        cls, headers: Sequence[tuple[str, bytes | str | None]] | None, data: Mapping[str, Any]
    ) -> CloudEvent:
        # One comprehension: this runs for every record a consumer reads (bench/).
        try:
            attributes = {
                _FROM_KAFKA[key]: value.decode() if isinstance(value, bytes) else value
                for key, value in headers or ()
                if value is not None and key in _FROM_KAFKA
            }
        except UnicodeDecodeError:
            bad = next(k for k, v in headers or () if isinstance(v, bytes) and not _utf8(v))
            raise EnvelopeError(f"header {bad!r} is not UTF-8") from None
        return cls._checked(attributes, data)

    @classmethod
    def from_amqp(cls, headers: Mapping[str, Any], data: Mapping[str, Any]) -> CloudEvent:
        attributes = {
            k.removeprefix(AMQP_PREFIX): str(v)
            for k, v in headers.items()
            if k.startswith(AMQP_PREFIX)
        }
        return cls.from_attributes(attributes, data)


# The attributes a CloudEvent takes from headers (every field but `data`); unknown ones are
# extensions this envelope does not carry.
_ATTRIBUTES = frozenset(f for f in CloudEvent.__dataclass_fields__ if f != "data")
# The attributes with a plain default, as a decoded event without them gets it.
_UNSET = {
    name: f.default
    for name, f in CloudEvent.__dataclass_fields__.items()
    if f.default is not dataclasses.MISSING
}
# Binary mode: an attribute travels as `ce_<name>`, but content type as `content-type`.
_FROM_KAFKA = {f"{KAFKA_PREFIX}{name}": name for name in _ATTRIBUTES} | {
    "content-type": "datacontenttype"
}


def _utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True
