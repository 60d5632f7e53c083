"""Sends each caused event where the catalog says it travels: a Kafka topic or an exchange."""

from __future__ import annotations

from typing import Protocol

from tide.codecs.json_schema import EventCodec
from tide.events.envelope import CloudEvent


class EventSink(Protocol):
    """Anything that durably accepts an event or raises."""

    def publish(self, event: CloudEvent) -> object: ...


class EventRouter:
    """Kafka for topic events, RabbitMQ for exchange events; both wait for the broker's ack."""

    def __init__(self, codec: EventCodec, kafka: EventSink, rabbitmq: EventSink | None) -> None:
        self.codec = codec
        self.kafka = kafka
        self.rabbitmq = rabbitmq

    def publish(self, event: CloudEvent) -> object:
        event_type = self.codec.event_type(event.type)
        if event_type.exchange is None:
            return self.kafka.publish(event)
        if self.rabbitmq is None:
            raise RuntimeError(f"{event.type} goes to RabbitMQ, but TIDE_RABBITMQ_URL is not set")
        return self.rabbitmq.publish(event)
