"""Telling a librdkafka client wedged for good from a Kafka outage (issue #15.1).

A broker that is starting answers Metadata with no brokers but its topics. librdkafka
2.13 to 2.16 then decommissions every broker it knows and stops its re-bootstrap timer:
the client never connects again (librdkafka issue #5301, fix proposed in #5303, not
released). A single-broker restart hits it now and then, producers and consumers alike.
Only a new client helps, so a client out of service this long asks a fresh one whether
Kafka answers; once Kafka has answered for a while and the client has still not come
back, its owner replaces it. During a real outage the probe fails and nothing happens.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# Out of service this long before Kafka is asked at all.
OUT_FOR_S = 30.0
# A healthy consumer is back in its group well within this once Kafka answers (a restarted
# coordinator drops the old members after one session timeout, 10 s).
KAFKA_ANSWERS_FOR_S = 20.0
# A producer has no group to rejoin: a healthy one delivers within seconds of Kafka's
# return, and an API's callers wait on it.
PRODUCER_OUT_FOR_S = 15.0
PRODUCER_ANSWERS_FOR_S = 10.0
PROBE_EVERY_S = 5.0


class WedgeWatch:
    """Probes Kafka with a fresh client while the watched one is out of service."""

    def __init__(self, client: dict[str, Any], *, producer: bool = False) -> None:
        self._client = client
        self._producer = producer
        self._last_probe = 0.0
        self.answering_since: float | None = None

    def wedged(self, out_since: float | None) -> bool:
        """True when the client has been out of service since `out_since` (None: it is in
        service) for at least OUT_FOR_S and Kafka has answered a fresh client for
        KAFKA_ANSWERS_FOR_S (the PRODUCER_ limits for a producer)."""
        now = time.monotonic()
        out_for_s = 0.0 if out_since is None else now - out_since
        least, grace = (
            (PRODUCER_OUT_FOR_S, PRODUCER_ANSWERS_FOR_S)
            if self._producer
            else (OUT_FOR_S, KAFKA_ANSWERS_FOR_S)
        )
        if out_for_s < least:
            self.answering_since = None
            return False
        if now - self._last_probe < PROBE_EVERY_S:
            return False
        self._last_probe = now
        try:
            AdminClient(self._client).list_topics(timeout=5)
        except KafkaException:
            self.answering_since = None  # an outage, not a wedged client
            return False
        if self.answering_since is None:
            self.answering_since = now
        return now - self.answering_since >= grace

    def answered_for(self) -> float:
        return 0.0 if self.answering_since is None else time.monotonic() - self.answering_since

    def replaced(self) -> None:
        self.answering_since = None
