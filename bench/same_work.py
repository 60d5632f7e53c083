"""The work a bare baseline (and a peer) must do because Tide's path does it, done without
Tide's code: the same CloudEvents headers built per event, each record's JSON and headers
parsed, the codec's own compiled schema check, and the same exactly-once marks in PostgreSQL.

Only what must match comes from Tide: the header names (read off codec.encode's output) and
the compiled validator (tide.codecs.json_schema.validate, which the codec runs on every
record). The rest is what anyone would write with the bare clients.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from tide.codecs.json_schema import EventCodec, validate
from tide.events.envelope import AMQP_PREFIX, KAFKA_PREFIX, CloudEvent
from tide.store.processed import MARK_PROCESSED


@dataclass(frozen=True)
class Headers:
    """The CloudEvents headers Tide sets on an event type, to be built per event: each as
    (header name, the event attribute it carries, the value when the event leaves it unset,
    which is the `dataschema` the codec stamps per type)."""

    fields: tuple[tuple[str, str, str], ...]

    @classmethod
    def kafka(cls, codec: EventCodec, sample: CloudEvent) -> Headers:
        """Names from codec.encode's output for `sample`; `content-type` carries the content
        type (binary mode), every `ce_*` header its attribute."""
        stamped = [(name, value.decode()) for name, value in codec.encode(sample).headers]
        plan = cls(tuple((n, _kafka_attribute(n), v) for n, v in stamped))
        assert plan.binary(sample) == codec.encode(sample).headers, "headers drifted from Tide's"
        return plan

    @classmethod
    def amqp(cls, codec: EventCodec, sample: CloudEvent) -> Headers:
        """Names from codec.encode_amqp's output for `sample` (`cloudEvents_*`)."""
        stamped = codec.encode_amqp(sample)[1]
        plan = cls(tuple((n, n.removeprefix(AMQP_PREFIX), v) for n, v in stamped.items()))
        assert plan.text(sample) == stamped, "headers drifted from Tide's"
        return plan

    def _values(self, event: CloudEvent) -> Iterator[tuple[str, str]]:
        for name, attribute, unset in self.fields:
            value = getattr(event, attribute)
            yield name, unset if value is None else value

    def binary(self, event: CloudEvent) -> list[tuple[str, str | bytes | None]]:
        """Kafka headers as a bare producer sets them: (name, UTF-8 bytes), typed as
        confluent-kafka takes them."""
        return [(name, value.encode()) for name, value in self._values(event)]

    def text(self, event: CloudEvent) -> dict[str, str]:
        """The same as a name -> text mapping (what FastStream and aio-pika take)."""
        return dict(self._values(event))


def _kafka_attribute(header: str) -> str:
    return "datacontenttype" if header == "content-type" else header.removeprefix(KAFKA_PREFIX)


def checked(codec: EventCodec, value: bytes, headers: Sequence[tuple[str, bytes]]) -> str:
    """What any consumer that trusts nothing it reads does with a record: its headers into a
    dict, its value parsed (orjson, as the codec), and the codec's compiled schema check for
    the type the headers name. Returns the event id, for the marks."""
    attributes = {name: raw.decode() for name, raw in headers}
    data: Any = orjson.loads(value)
    validate(codec.event_type(attributes["ce_type"]), data)
    return attributes["ce_id"]


@contextmanager
def marked(db: psycopg.Connection[Any], consumer: str, ids: list[str]) -> Iterator[None]:
    """One transaction that marks `ids` processed by `consumer` with Tide's statement; the
    handlers run inside it (the body), as in Tide's runners, and it commits on exit."""
    with db.transaction():
        db.execute(MARK_PROCESSED, (consumer, ids)).fetchall()
        yield
