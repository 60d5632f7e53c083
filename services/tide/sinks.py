"""Sends each caused event where the catalog says it travels: a Kafka topic or an exchange."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent

# Waits for one emitted event's acknowledgement; raises as `publish` would.
Acked = Callable[[], object]


class EventSink(Protocol):
    """Anything that durably accepts an event or raises."""

    def publish(self, event: CloudEvent) -> object:
        """Send and wait for the broker's acknowledgement."""
        ...

    def emit(self, event: CloudEvent) -> Acked:
        """Send without waiting; call the result to wait. Events emitted one after another
        are in flight together, so a batch costs one round trip, not one per event."""
        ...


class EventRouter:
    """Kafka for topic events, RabbitMQ for exchange events; both wait for the broker's ack."""

    def __init__(self, codec: EventCodec, kafka: EventSink, rabbitmq: EventSink | None) -> None:
        self.codec = codec
        self.kafka = kafka
        self.rabbitmq = rabbitmq

    def _sink(self, event: CloudEvent) -> EventSink:
        if self.codec.event_type(event.type).exchange is None:
            return self.kafka
        if self.rabbitmq is None:
            raise RuntimeError(f"{event.type} goes to RabbitMQ, but TIDE_RABBITMQ_URL is not set")
        return self.rabbitmq

    def publish(self, event: CloudEvent) -> object:
        return self._sink(event).publish(event)

    def emit(self, event: CloudEvent) -> Acked:
        return self._sink(event).emit(event)
