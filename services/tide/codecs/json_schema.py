"""JSON Schema codec: validate at the producer, frame for the registry, decode and re-validate.

With a schema registry configured, values use confluent-kafka's JSON Schema
serializers (Confluent wire format: magic byte, schema id, JSON). Without one,
values are plain JSON validated against the same catalog schemas; consumers
accept both, so a registry can be introduced without a flag day.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import fastjsonschema
import jsonschema
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tide.errors import PlatformUnavailableError
from tide.events.envelope import CloudEvent, EnvelopeError
from tide.events.schemas import schema, schema_text
from tide.topology import Catalog, EventType

_MAGIC = 0


class InvalidEventError(ValueError):
    """An event does not match its schema; the message names the event type and the field."""

    def __init__(self, event_type: str, field: str, problem: str) -> None:
        super().__init__(f"{event_type}: field '{field}': {problem}")
        self.event_type = event_type
        self.field = field
        self.problem = problem


class UnknownEventTypeError(LookupError):
    """The catalog has no such event type."""


class UndecodableRecordError(ValueError):
    """A record cannot become an event: bad JSON, framing, envelope or schema. Never retried."""


class RegistryUnavailableError(PlatformUnavailableError):
    """The schema registry did not answer, timed out, refused our credentials or failed
    itself: the record waits in place (it is not undecodable) and the API answers 503."""


# Answers that say nothing about the schema asked for: the registry's own trouble.
_REGISTRY_TROUBLE = {401, 403, 408, 429}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection refused, reset, timed out, no DNS: as raised by the HTTP client the
    registry client uses, httpx2 when installed, else httpx (confluent-kafka picks)."""
    found: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except ImportError:
            continue
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


def _registry_unavailable(error: BaseException) -> bool:
    if isinstance(error, _TRANSPORT_ERRORS):
        return True
    if isinstance(error, SchemaRegistryError):
        return error.http_status_code >= 500 or error.http_status_code in _REGISTRY_TROUBLE
    return False


@dataclass(frozen=True)
class Encoded:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@cache
def _fast_check(event: EventType) -> Callable[[Any], Any]:
    # Compiled to Python once per event type: the hot path for valid events
    # (jsonschema's generic walk cost ~90% of encoding; see bench/).
    # use_default=False: validation must never change an event (no defaults filled in).
    return fastjsonschema.compile(schema(event), use_default=False)


@cache
def _validator(event: EventType) -> jsonschema.protocols.Validator:
    validator_class = jsonschema.validators.validator_for(schema(event))
    return validator_class(schema(event), format_checker=validator_class.FORMAT_CHECKER)


def validate(event_type: EventType, data: Any) -> None:
    """Raise InvalidEventError naming the first (most relevant) field that breaks the schema."""
    try:
        _fast_check(event_type)(data)
    except fastjsonschema.JsonSchemaValueException as fast:
        refused = fast  # invalid: let jsonschema find the most relevant error, to name the field
    else:
        return
    error = jsonschema.exceptions.best_match(_validator(event_type).iter_errors(data))
    if error is None:
        # The two disagree where jsonschema's `pattern` (Python's re.search, whose `$`
        # also matches before a final newline) passes what the compiled check refuses:
        # the stricter answer stands, so both validators refuse the same events.
        field = (refused.name or "data").removeprefix("data").lstrip(".") or "(root)"
        raise InvalidEventError(event_type.type, field, refused.message)
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        field = f"{path}.{missing}" if path else missing
        raise InvalidEventError(event_type.type, field, "is required")
    raise InvalidEventError(event_type.type, path or "(root)", error.message)


class EventCodec:
    """Turns CloudEvents into Kafka records of their catalog topic, and back."""

    def __init__(self, catalog: Catalog, registry_url: str = "") -> None:
        self.catalog = catalog
        # new_client serves "mock://" URLs with confluent-kafka's in-process mock (unit tests).
        self._registry = (
            SchemaRegistryClient.new_client({"url": registry_url}) if registry_url else None
        )
        self._serializers: dict[EventType, JSONSerializer] = {}
        self._latest: dict[str, EventType] = {}  # the catalog is a list; this is every publish
        self._deserializer = (
            JSONDeserializer(None, schema_registry_client=self._registry)
            if self._registry
            else None
        )

    def event_type(self, type_: str) -> EventType:
        found = self._latest.get(type_)
        if found is None:
            try:
                found = self._latest[type_] = self.catalog.event(type_)
            except LookupError as exc:
                raise UnknownEventTypeError(str(exc)) from None
        return found

    def checked(self, event: CloudEvent) -> EventType:
        """The event's catalog type, once its data matches the schema."""
        event_type = self.event_type(event.type)
        validate(event_type, dict(event.data))
        return event_type

    def encode(self, event: CloudEvent) -> Encoded:
        """Validate and frame an event; raises InvalidEventError or UnknownEventTypeError."""
        event_type = self.checked(event)
        if event_type.topic is None:
            raise ValueError(f"{event.type} travels on exchange {event_type.exchange}, not Kafka")
        key = str(event.data[event_type.key]).encode()
        if self._registry is None:
            value = orjson.dumps(dict(event.data))
        else:
            context = SerializationContext(event_type.topic, MessageField.VALUE)
            try:
                encoded = self._serializer(event_type)(dict(event.data), context)
            except Exception as exc:
                if _registry_unavailable(exc):
                    raise RegistryUnavailableError(f"schema registry unavailable: {exc}") from exc
                raise
            assert encoded is not None
            value = encoded
        headers = event.kafka_headers(dataschema=_schema_uri(event_type))
        return Encoded(event_type.topic, key, value, headers)

    def encode_amqp(self, event: CloudEvent) -> tuple[bytes, dict[str, str]]:
        """A validated AMQP body (JSON) and its CloudEvents headers."""
        event_type = self.checked(event)
        return orjson.dumps(dict(event.data)), event.amqp_headers(
            dataschema=_schema_uri(event_type)
        )

    def decode_amqp(self, body: bytes, headers: dict[str, Any]) -> CloudEvent:
        """The event an AMQP message carries, validated; raises UndecodableRecordError."""
        try:
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise UndecodableRecordError("body is not a JSON object")
            event = CloudEvent.from_amqp(headers, data)
            validate(self.event_type(event.type), data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UndecodableRecordError(f"body is not JSON: {exc}") from exc
        except (EnvelopeError, InvalidEventError, UnknownEventTypeError) as exc:
            raise UndecodableRecordError(str(exc)) from exc
        return event

    def decode(
        self, topic: str, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> CloudEvent:
        """The event a record carries, validated; raises UndecodableRecordError with the reason."""
        if not value:
            raise UndecodableRecordError("empty record value")
        if value[0] == _MAGIC:
            if self._deserializer is None:
                raise UndecodableRecordError(
                    "record uses the schema registry wire format but no registry is configured"
                )
            try:
                data = self._deserializer(value, SerializationContext(topic, MessageField.VALUE))
            except Exception as exc:
                # An outage (or a cold cache meeting one) is the platform's fault; any
                # other failure (an unknown schema id, bad JSON) is the record's.
                if _registry_unavailable(exc):
                    raise RegistryUnavailableError(f"schema registry unavailable: {exc}") from exc
                raise UndecodableRecordError(f"registry deserialization failed: {exc}") from exc
        else:
            try:
                data = orjson.loads(value)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UndecodableRecordError(f"value is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UndecodableRecordError(f"value is JSON {type(data).__name__}, not an object")
        try:
            event = CloudEvent.from_kafka(headers, data)
            validate(self.event_type(event.type), data)
        except (EnvelopeError, InvalidEventError, UnknownEventTypeError) as exc:
            raise UndecodableRecordError(str(exc)) from exc
        return event

    def _serializer(self, event_type: EventType) -> JSONSerializer:
        serializer = self._serializers.get(event_type)
        if serializer is None:
            serializer = JSONSerializer(
                schema_text(event_type),
                self._registry,
                conf={
                    "auto.register.schemas": True,
                    # Several event types share a topic: one subject per type.
                    "subject.name.strategy": lambda _ctx, _name: event_type.subject,
                },
            )
            self._serializers[event_type] = serializer
        return serializer


def _schema_uri(event_type: EventType) -> str:
    """The `dataschema` stamped on events that do not name their schema."""
    return f"tide:{event_type.type}/v{event_type.version}"
