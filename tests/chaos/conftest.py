"""Chaos tests act on the brokers the harness started; they refuse brokers they cannot restart."""

from __future__ import annotations

import pytest

from tide_dev import BrokerSession, HarnessError
from tide_dev.kafka import KafkaBroker


@pytest.fixture
def own_kafka(broker_session: BrokerSession) -> KafkaBroker:
    if broker_session.kafka is None:
        raise HarnessError(
            "Kafka",
            reason="chaos tests restart the broker, so they need the one the harness started",
            fix="unset TIDE_KAFKA_BOOTSTRAP to let the harness start Kafka",
        )
    return broker_session.kafka
