"""Every Prometheus metric Tide's services export. Alert rules and dashboards use these names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "tide_events_published", "Events the broker acknowledged", ["event_type", "topic"]
)
PUBLISH_FAILURES = Counter(
    "tide_publish_failures",
    "Events that could not be confirmed by the broker",
    ["event_type", "reason"],
)
PROCESSED = Counter("tide_messages_processed", "Records a handler finished", ["group", "topic"])
FAILED = Counter("tide_messages_failed", "Handler failures, by error class", ["group", "error"])
PLATFORM_WAITS = Counter(
    "tide_platform_waits",
    "Records put back to wait in place for PostgreSQL, Kafka or the registry",
    ["group"],
)
RETRIED = Counter("tide_messages_retried", "Records sent to a retry topic", ["group", "delay"])
DEAD_LETTERED = Counter(
    "tide_messages_dead_lettered", "Records sent to the DLQ", ["group", "reason"]
)
HANDLER_SECONDS = Histogram(
    "tide_handler_duration_seconds",
    "Time a handler took per record",
    ["group"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PRODUCER_REPLACEMENTS = Counter(
    "tide_producer_replacements",
    "New producers started after one delivered nothing while Kafka answered",
)
CONSUMER_REJOINS = Counter(
    "tide_consumer_rejoins",
    "New consumer clients started after one lost its group while Kafka answered",
    ["group"],
)
CONSUMER_LAG = Gauge(
    "tide_consumer_lag",
    "Records behind the partition end, as the consumer sees it",
    ["group", "topic", "partition"],
)
PROCESSED_MARKS = Gauge(
    "tide_processed_marks", "Processed-event marks kept for deduplication", ["group"]
)
PROCESSED_MARKS_PRUNED = Counter(
    "tide_processed_marks_pruned", "Processed-event marks deleted past retention", ["group"]
)
OUTBOX_BACKLOG = Gauge("tide_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "tide_outbox_oldest_age_seconds", "Age of the oldest outbox row not yet published (0 if none)"
)
OUTBOX_DEAD_LETTERED = Counter(
    "tide_outbox_dead_lettered_total", "Outbox rows that can never be published, set aside"
)
API_REQUEST_SECONDS = Histogram(
    "tide_api_request_duration_seconds",
    "Time an API took to answer a command (POST), or to refuse a request for want of"
    " credentials or scope (401, 403, 503), by status code",
    ["status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_REFUSALS = Counter(
    "tide_api_auth_refusals",
    "Requests an API refused before running them: 401 unauthenticated, 403 missing scope,"
    " 503 issuer keys unreachable",
    ["status"],
)
EVENT_STORE_ERRORS = Counter(
    "tide_event_store_errors", "Event store operations that failed", ["operation"]
)

# Names as Prometheus stores them (counters gain `_total`), for alert expressions.
PUBLISH_FAILURES_SERIES = "tide_publish_failures_total"
EVENT_STORE_ERRORS_SERIES = "tide_event_store_errors_total"
DEAD_LETTERED_SERIES = "tide_messages_dead_lettered_total"
OUTBOX_OLDEST_AGE_SERIES = "tide_outbox_oldest_age_seconds"
AUTH_REFUSALS_SERIES = "tide_api_auth_refusals_total"
