"""Retrying broker calls through the moments when leaders and coordinators move.

Right after a topic or group appears, or a broker restarts, metadata and admin
calls answer NOT_LEADER / NOT_COORDINATOR / ...LOAD_IN_PROGRESS for a moment.
librdkafka does not always flag those as retriable on admin results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

_T = TypeVar("_T")

MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError._TRANSPORT,
}


def retrying(call: Callable[[], _T], timeout: float) -> _T:
    """`call()`, again after a short pause while it fails transiently, until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in MOVING
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # backoff between retries of a broker call, bounded by the deadline


# Every client Tide makes goes back to `bootstrap.servers` after this long without metadata
# from any broker it knows. librdkafka 2.16 drops ("decommissions") a broker that a
# shutting-down broker's last metadata leaves out; when that was the only broker it knew,
# and its "all brokers down" re-bootstrap did not fire first, the client knows no broker at
# all and waits out the default trigger of five minutes. A consumer group showed it as
# 0 members and a growing backlog long after Kafka was back (issue #15.1).
REBOOTSTRAP = {"metadata.recovery.rebootstrap.trigger.ms": 10_000}
