"""Kafka: the event publisher and the consumer runners."""
