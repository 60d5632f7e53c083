"""Where a failed record goes next, and the headers that let an operator understand and redrive it.

Headers (all strings): the original topic, partition and offset, the attempt
that failed, the error's type and message, when it first failed, and on retry
topics when it may be tried again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from tide.topology import ConsumerGroup

ORIGINAL_TOPIC = "tide-original-topic"
ORIGINAL_PARTITION = "tide-original-partition"
ORIGINAL_OFFSET = "tide-original-offset"
ATTEMPT = "tide-attempt"
ERROR_TYPE = "tide-error-type"
ERROR_MESSAGE = "tide-error-message"
FIRST_FAILURE = "tide-first-failure-ms"
NOT_BEFORE = "tide-not-before-ms"
DEAD_LETTER_REASON = "tide-dead-letter-reason"
REDRIVE_COUNT = "tide-redrive-count"

TIDE_HEADERS = frozenset(
    {
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ATTEMPT,
        ERROR_TYPE,
        ERROR_MESSAGE,
        FIRST_FAILURE,
        NOT_BEFORE,
        DEAD_LETTER_REASON,
    }
)
_MAX_MESSAGE = 1000


class DeadLetterReason(StrEnum):
    UNDECODABLE = "undecodable"  # not JSON, bad envelope, schema-invalid, unknown type
    PERMANENT = "permanent"  # the handler raised PermanentError
    EXHAUSTED = "exhausted"  # transient failures outlasted every retry


@dataclass(frozen=True)
class FailedRecord:
    topic: str
    partition: int
    offset: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Route:
    """Produce the record, unchanged but for these headers, to `topic`."""

    topic: str
    headers: dict[str, str]
    reason: DeadLetterReason | None  # None: a retry


def attempt_of(headers: dict[str, str]) -> int:
    """Which attempt this delivery is (1 for a record fresh from its topic)."""
    return int(headers.get(ATTEMPT, "0")) + 1


def route_failure(
    group: ConsumerGroup,
    record: FailedRecord,
    error: BaseException,
    reason: DeadLetterReason | None,
    now_ms: int | None = None,
) -> Route:
    """The retry topic for the next attempt, or the DLQ when `reason` says so or retries ran out."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    attempt = attempt_of(record.headers)
    headers = {k: v for k, v in record.headers.items() if k not in TIDE_HEADERS}
    # The first failure names the record's home; retries keep pointing there.
    headers[ORIGINAL_TOPIC] = record.headers.get(ORIGINAL_TOPIC, record.topic)
    headers[ORIGINAL_PARTITION] = record.headers.get(ORIGINAL_PARTITION, str(record.partition))
    headers[ORIGINAL_OFFSET] = record.headers.get(ORIGINAL_OFFSET, str(record.offset))
    headers[FIRST_FAILURE] = record.headers.get(FIRST_FAILURE, str(now_ms))
    headers[ATTEMPT] = str(attempt)
    headers[ERROR_TYPE] = type(error).__name__
    headers[ERROR_MESSAGE] = str(error)[:_MAX_MESSAGE]
    if reason is None and attempt >= group.retry.max_attempts:
        reason = DeadLetterReason.EXHAUSTED
    if reason is not None:
        headers[DEAD_LETTER_REASON] = str(reason)
        return Route(group.dlq_topic, headers, reason)
    delay_s = group.retry.delays_s[attempt - 1]
    headers[NOT_BEFORE] = str(now_ms + delay_s * 1000)
    return Route(group.retry_topics[attempt - 1], headers, None)
