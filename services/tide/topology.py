"""The shape of a Tide catalog: topics, services, consumer groups, queues, events, and its rules.

A platform's catalog file (tide.catalog_file) is read into one instance of it; everything
else (the Pulumi program, the runners, the tests) reads that instance and derives names from it
with the properties below, so a name is spelled in exactly one place.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Kubernetes object names (RFC 1123 label): services, groups and queues become
# Deployments, ScaledObjects and KafkaUsers, so they must fit here.
_K8S_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kafka topic names; KafkaTopic resources add the RFC 1123 subdomain rule (lower case).
_KAFKA_TOPIC = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9]*(\.[a-z][a-z0-9_]*)+$")
_HANDLER = re.compile(r"^[a-zA-Z_][\w.]*:[a-zA-Z_]\w*$")
# An unquoted PostgreSQL identifier, as a migration writes a table's name.
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_T = TypeVar("_T")
_DAY_MS = 24 * 3_600_000

# Retry and DLQ topics append at most ".retry.3600s" / ".dlq" to a group name.
_MAX_GROUP_NAME = 40


def _k8s_name(value: str) -> str:
    if len(value) > 63 or not _K8S_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name "
            "(lower-case letters, digits and '-', at most 63, starting and ending alphanumeric)"
        )
    return value


def _topic_name(value: str) -> str:
    if len(value) > 249 or not _KAFKA_TOPIC.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid topic name for Kafka and KafkaTopic "
            "(lower-case letters, digits, '.', '-', at most 249)"
        )
    return value


def _table_name(value: str) -> str:
    if not _TABLE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a table name as migrations write them "
            "(lower-case letters, digits and '_', at most 63, not starting with a digit)"
        )
    return value


K8sName = Annotated[str, AfterValidator(_k8s_name)]
TopicName = Annotated[str, AfterValidator(_topic_name)]
TableName = Annotated[str, AfterValidator(_table_name)]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CleanupPolicy(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


class Topic(_Entry):
    """A Kafka topic of the platform."""

    name: TopicName
    partitions: int = Field(ge=1, le=1000)
    retention_ms: int = Field(ge=60_000, description="how long records are kept")
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    description: str = ""

    def config(self) -> dict[str, str]:
        """Topic-level Kafka configs, as KafkaTopic `spec.config` and AdminClient want them."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


class RetryPolicy(_Entry):
    """Delays between attempts of a failing record; after the last one it goes to the DLQ."""

    delays_s: tuple[int, ...] = Field(default=(1, 10, 60), min_length=0, max_length=6)

    @property
    def max_attempts(self) -> int:
        """The first try plus one per retry topic."""
        return len(self.delays_s) + 1

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        if any(d <= 0 or d > 3600 for d in self.delays_s):
            raise ValueError("retry delays must be between 1 and 3600 seconds")
        if list(self.delays_s) != sorted(set(self.delays_s)):
            raise ValueError("retry delays must be strictly increasing")
        return self


class Autoscaling(_Entry):
    """KEDA bounds for one consumer group or queue worker."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    lag_threshold: int = Field(
        default=100, ge=1, description="target lag (or queue depth) per replica"
    )
    activation_lag_threshold: int = Field(
        default=10, ge=0, description="scale from zero above this"
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} exceeds max_replicas {self.max_replicas}"
            )
        return self


class Alerting(_Entry):
    """When Prometheus pages for a consumer group."""

    max_lag: int = Field(default=1000, ge=1, description="lag that fires TideConsumerGroupLagHigh")
    lag_for: str = "5m"
    dlq_growth_for: str = "1m"


class Role(StrEnum):
    API = "api"  # HTTP in front, produces events
    CONSUMER = "consumer"  # Kafka consumer groups
    WORKER = "worker"  # RabbitMQ competing consumers


# A dotted Python package name: where the catalog finds a platform's schemas and migrations.
PACKAGE = r"[a-zA-Z_]\w*(\.[a-zA-Z_]\w*)*"
# Where every process serves /metrics on Kubernetes (TIDE_METRICS_PORT), behind a Service
# of its own (the OpenTelemetry Prometheus exporter's port: free of Kafka's, RabbitMQ's and
# PostgreSQL's). No service's HTTP port may take it.
METRICS_PORT = 9464


# What a service's role may do on one of its tables, as SQL names the privileges.
TablePrivilege = Literal["select", "insert", "update", "delete"]
READ_WRITE: tuple[TablePrivilege, ...] = ("select", "insert", "update", "delete")


class Table(_Entry):
    """One of a service's tables, with only the privileges its handlers use."""

    name: TableName
    privileges: tuple[TablePrivilege, ...] = Field(
        min_length=1,
        description="what its role may do: select, insert, update, delete (an upsert is"
        " insert and update, and select when it reads the row or returns a column)",
    )


def _table_access(table: str | Table) -> tuple[str, tuple[TablePrivilege, ...]]:
    return (table.name, table.privileges) if isinstance(table, Table) else (table, READ_WRITE)


class Service(_Entry):
    """One deployable process; its `command` is the image's argument list."""

    name: K8sName
    role: Role
    description: str = ""
    http_port: int = Field(
        default=8080,
        ge=1024,
        le=65535,
        description="where its HTTP server (an API, the probes) listens on Kubernetes: the"
        " container's port and its Service's; not 9464, the metrics port",
    )
    produces: tuple[TopicName, ...] = ()
    publishes_to_exchanges: tuple[K8sName, ...] = ()
    public: bool = Field(
        default=False, description="reachable from outside the cluster (the stack's exposure)"
    )
    replicas: int = Field(
        default=1, ge=1, description="fixed replicas for services KEDA does not scale"
    )
    app: str | None = Field(
        default=None,
        description="role api: 'module:function' building its app from a tide.handlers.AppContext",
    )
    database: bool = Field(
        default=False,
        description="role api: it keeps state in PostgreSQL (consumers and workers always do)",
    )
    tables: tuple[TableName | Table, ...] = Field(
        default=(),
        description="the PostgreSQL tables its handlers use: a name alone for read and write"
        " (select, insert, update, delete), or {name, privileges} for only those; its"
        " database role may touch only these and the platform's own tables its role needs",
    )

    def table_privileges(self) -> dict[str, tuple[TablePrivilege, ...]]:
        """Each of its tables -> what its role may do on it."""
        return dict(map(_table_access, self.tables))

    @model_validator(mode="after")
    def _app(self) -> Self:
        if self.role is Role.API:
            if self.app is None:
                raise ValueError("role api needs app: 'package.module:function' building its app")
            if not _HANDLER.fullmatch(self.app):
                raise ValueError(f"app {self.app!r} must look like 'package.module:function'")
        elif self.app is not None or self.database:
            raise ValueError(f"app and database are for role api, not role {self.role}")
        if self.http_port == METRICS_PORT:
            raise ValueError(
                f"http_port {METRICS_PORT} is where /metrics is served; choose another"
            )
        return self

    @property
    def command(self) -> tuple[str, ...]:
        return ("tide", "run", self.name)

    @property
    def source(self) -> str:
        """The CloudEvents `source` of what this service produces."""
        return f"/{self.name}"


class ConsumerGroup(_Entry):
    """A Kafka consumer group: which service runs it, what it reads, how it fails and scales."""

    name: K8sName
    service: K8sName
    topics: tuple[TopicName, ...] = Field(min_length=1)
    handler: str = Field(description="'module:function' taking one event")
    retry: RetryPolicy = RetryPolicy()
    autoscaling: Autoscaling
    alerting: Alerting = Alerting()

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if not _HANDLER.fullmatch(self.handler):
            raise ValueError(f"handler {self.handler!r} must look like 'package.module:function'")
        if len(self.name) > _MAX_GROUP_NAME:
            raise ValueError(
                f"name is longer than {_MAX_GROUP_NAME} characters (retry topics append to it)"
            )
        return self

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """`<group>.retry.<delay>s`, one per delay, in order."""
        return tuple(f"{self.name}.retry.{delay}s" for delay in self.retry.delays_s)

    @property
    def dlq_topic(self) -> str:
        return f"{self.name}.dlq"


class ExchangeType(StrEnum):
    TOPIC = "topic"
    DIRECT = "direct"
    FANOUT = "fanout"


class Exchange(_Entry):
    name: K8sName
    type: ExchangeType = ExchangeType.TOPIC


class Queue(_Entry):
    """A quorum queue with a delivery limit; its dead letters go to `<queue>.dlq`."""

    name: K8sName
    delivery_limit: int = Field(default=5, ge=1)

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.name}.dlx"


class Binding(_Entry):
    exchange: K8sName
    queue: K8sName
    routing_key: str = "#"


class QueueWorker(_Entry):
    """Competing consumers of one RabbitMQ queue."""

    service: K8sName
    queue: K8sName
    handler: str
    prefetch: int = Field(default=20, ge=1)
    autoscaling: Autoscaling


class EventType(_Entry):
    """One event type and version: where it travels (topic or exchange), its key, its schema."""

    type: str
    version: int = Field(default=1, ge=1)
    topic: TopicName | None = None
    exchange: K8sName | None = None
    routing_key: str = ""
    key: str = Field(description="payload field whose value is the Kafka key (the aggregate id)")
    schemas: str = Field(
        default="",
        pattern=rf"^({PACKAGE})?$",
        description="Python package holding '<type>.v<version>.json' (default: the catalog's)",
    )

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if not _EVENT_TYPE.fullmatch(self.type):
            raise ValueError(
                f"event type {self.type!r} must be dotted lower case, e.g. 'order.placed'"
            )
        if (self.topic is None) == (self.exchange is None):
            raise ValueError(f"event type {self.type!r} needs exactly one of topic or exchange")
        return self

    @property
    def schema_file(self) -> str:
        return f"{self.type}.v{self.version}.json"

    @property
    def subject(self) -> str:
        """The registry subject (TopicRecordNameStrategy: many types share one topic)."""
        return f"{self.topic or self.exchange}-{self.type}"


class CatalogRulesError(ValueError):
    """The rules across entries that do not hold, each naming its entries."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("catalog is invalid:\n  - " + "\n  - ".join(problems))


class Catalog(_Entry):
    """The whole platform, validated as one: the rules below hold or it does not load."""

    topics: tuple[Topic, ...]
    services: tuple[Service, ...]
    consumer_groups: tuple[ConsumerGroup, ...]
    exchanges: tuple[Exchange, ...] = ()
    queues: tuple[Queue, ...] = ()
    bindings: tuple[Binding, ...] = ()
    queue_workers: tuple[QueueWorker, ...] = ()
    events: tuple[EventType, ...] = ()
    schemas: str = Field(
        pattern=rf"^{PACKAGE}$",
        description="Python package holding each event's JSON Schema, '<type>.v<version>.json'",
    )
    migrations: str | None = Field(
        default=None,
        pattern=rf"^{PACKAGE}$",
        description="Python package holding the platform's own SQL migrations,"
        " '<NNNN>_<name>.sql', applied in order after Tide's by `tide db migrate`: the"
        " tables that services list in `tables`",
    )
    kind: Literal["tide.catalog/v1"] = "tide.catalog/v1"

    @model_validator(mode="before")
    @classmethod
    def _events_schemas(cls, data: object) -> object:
        # Every event reads its schema from the catalog's package unless it names its own,
        # so a schema lookup needs only the event.
        if isinstance(data, dict) and isinstance(data.get("schemas"), str):
            events = data.get("events") or ()
            data = {
                **data,
                "events": [
                    {**e, "schemas": e.get("schemas") or data["schemas"]}
                    if isinstance(e, dict)
                    else e
                    for e in events
                ],
            }
        return data

    def isolated(self, suffix: str) -> Catalog:
        """The same platform with every topic, group, exchange and queue name suffixed:
        several copies (parallel tests, a demo beside the tests) share brokers unseen."""

        def renamed(name: str) -> str:
            return f"{name}-{suffix}"

        data = self.model_dump()
        for entry in data["topics"] + data["exchanges"] + data["queues"]:
            entry["name"] = renamed(entry["name"])
        for entry in data["services"]:
            entry["produces"] = tuple(map(renamed, entry["produces"]))
            entry["publishes_to_exchanges"] = tuple(map(renamed, entry["publishes_to_exchanges"]))
        for entry in data["consumer_groups"]:
            entry["name"] = renamed(entry["name"])
            entry["topics"] = tuple(map(renamed, entry["topics"]))
        for entry in data["bindings"]:
            entry["exchange"], entry["queue"] = renamed(entry["exchange"]), renamed(entry["queue"])
        for entry in data["queue_workers"]:
            entry["queue"] = renamed(entry["queue"])
        for entry in data["events"]:
            for where in ("topic", "exchange"):
                if entry[where] is not None:
                    entry[where] = renamed(entry[where])
        return Catalog.model_validate(data)

    def topic(self, name: str) -> Topic:
        return _one(self.topics, "topic", name, lambda t: t.name)

    def service(self, name: str) -> Service:
        return _one(self.services, "service", name, lambda s: s.name)

    def group(self, name: str) -> ConsumerGroup:
        return _one(self.consumer_groups, "consumer group", name, lambda g: g.name)

    def event(self, type_: str, version: int | None = None) -> EventType:
        """The event type (its latest version unless one is given)."""
        matches = [
            e for e in self.events if e.type == type_ and (version is None or e.version == version)
        ]
        if not matches:
            known = ", ".join(sorted({e.type for e in self.events}))
            raise LookupError(f"unknown event type {type_!r}; known: {known}")
        return max(matches, key=lambda e: e.version)

    def front_api(self) -> Service | None:
        """The API people reach first: the public one, else the first API; None without one."""
        apis = [s for s in self.services if s.role is Role.API]
        return next((s for s in apis if s.public), apis[0] if apis else None)

    def groups_of(self, service: str) -> tuple[ConsumerGroup, ...]:
        return tuple(g for g in self.consumer_groups if g.service == service)

    def workers_of(self, service: str) -> tuple[QueueWorker, ...]:
        return tuple(w for w in self.queue_workers if w.service == service)

    def consumers_of(self, service: str) -> tuple[str, ...]:
        """The names `service` records its exactly-once marks under (tide.store.processed):
        each of its groups' name and each of its workers' queue. Unique in a catalog, so a
        database role owns its marks by these names (tide.store.grants)."""
        return tuple(g.name for g in self.groups_of(service)) + tuple(
            w.queue for w in self.workers_of(service)
        )

    def side_topics(self, group: ConsumerGroup) -> tuple[Topic, ...]:
        """A group's retry topics and DLQ, sized so every replica can work on them.

        Retry topics keep records a day (far beyond the longest delay); the DLQ
        keeps them two weeks, time enough to fix a handler and redrive.
        """
        partitions = max(self.topic(t).partitions for t in group.topics)
        retries = tuple(
            Topic(
                name=name,
                partitions=partitions,
                retention_ms=_DAY_MS,
                description=f"records of group {group.name!r} waiting {delay}s before a retry",
            )
            for name, delay in zip(group.retry_topics, group.retry.delays_s, strict=True)
        )
        dlq = Topic(
            name=group.dlq_topic,
            partitions=partitions,
            retention_ms=14 * _DAY_MS,
            description=f"records group {group.name!r} gave up on; see `tide dlq`",
        )
        return (*retries, dlq)

    def dedupe_retention_ms(self, group: ConsumerGroup) -> int:
        """How long `group`'s processed marks must be kept: a record can come back as long
        as any topic it reads keeps it (a replay from the earliest offset, a retry), and
        then from the DLQ, which keeps it longer still. Marks older than that can go."""
        *retries, dlq = self.side_topics(group)
        read = [self.topic(t).retention_ms for t in group.topics]
        read += [t.retention_ms for t in retries]
        return max(read) + dlq.retention_ms

    def uses_rabbitmq(self, service: str) -> bool:
        return bool(self.service(service).publishes_to_exchanges or self.workers_of(service))

    def all_topics(self) -> tuple[Topic, ...]:
        """Catalog topics, then every group's retry and DLQ topics."""
        return (*self.topics, *(t for g in self.consumer_groups for t in self.side_topics(g)))

    def all_topic_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.all_topics())

    def topics_read_by(self, service: str) -> tuple[str, ...]:
        """Everything a service's groups consume: their topics and their own retry topics."""
        names: list[str] = []
        for group in self.groups_of(service):
            names += [*group.topics, *group.retry_topics]
        return tuple(dict.fromkeys(names))

    def topics_written_by(self, service: str) -> tuple[str, ...]:
        """What a service produces, plus its groups' retry and DLQ topics."""
        names = list(self.service(service).produces)
        for group in self.groups_of(service):
            names += [*group.retry_topics, group.dlq_topic]
        return tuple(dict.fromkeys(names))

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems = [
            *_unique_names(self),
            *_group_problems(self),
            *_service_problems(self),
            *_rabbitmq_problems(self),
            *_event_problems(self),
        ]
        if problems:
            raise CatalogRulesError(problems)
        return self


def _unique_names(catalog: Catalog) -> list[str]:
    return [
        *_duplicates("topic", [t.name for t in catalog.topics]),
        *_duplicates("service", [s.name for s in catalog.services]),
        *_duplicates("consumer group", [g.name for g in catalog.consumer_groups]),
        *_duplicates("queue", [q.name for q in catalog.queues]),
        *_duplicates("exchange", [x.name for x in catalog.exchanges]),
        *_duplicates("event", [f"{e.type} v{e.version}" for e in catalog.events]),
        # Groups and workers keep their exactly-once marks side by side, under a group's
        # name or a worker's queue (Catalog.consumers_of): each must be one consumer's.
        *(
            f"queue {queue!r} has more than one queue worker"
            for queue, n in sorted(Counter(w.queue for w in catalog.queue_workers).items())
            if n > 1
        ),
        *(
            f"queue {name!r} and consumer group {name!r} share a name: their exactly-once"
            " marks would be one consumer's; rename one"
            for name in sorted(
                {w.queue for w in catalog.queue_workers} & {g.name for g in catalog.consumer_groups}
            )
        ),
    ]


def _group_problems(catalog: Catalog) -> list[str]:
    problems: list[str] = []
    topics = {t.name: t for t in catalog.topics}
    services = {s.name: s for s in catalog.services}
    for group in catalog.consumer_groups:
        where = f"consumer group {group.name!r}"
        service = services.get(group.service)
        if service is None:
            problems.append(f"{where}: service {group.service!r} is not in the catalog")
        elif service.role is not Role.CONSUMER:
            problems.append(
                f"{where}: service {service.name!r} has role {service.role}, not consumer"
            )
        problems += [
            f"{where}: topic {name!r} is not in the catalog"
            for name in group.topics
            if name not in topics
        ]
        known = [topics[n] for n in group.topics if n in topics]
        if known:
            narrowest = min(known, key=lambda t: t.partitions)
            if group.autoscaling.max_replicas > narrowest.partitions:
                problems.append(
                    f"{where}: max_replicas {group.autoscaling.max_replicas} exceeds the "
                    f"{narrowest.partitions} partitions of topic {narrowest.name!r} "
                    "(replicas beyond the partition count would sit idle)"
                )
        problems += [
            f"{where}: its retry/DLQ topic {derived!r} is also a catalog topic"
            for derived in (*group.retry_topics, group.dlq_topic)
            if derived in topics
        ]
    return problems


def _service_problems(catalog: Catalog) -> list[str]:
    problems: list[str] = []
    topics = {t.name for t in catalog.topics}
    exchanges = {x.name for x in catalog.exchanges}
    for service in catalog.services:
        where = f"service {service.name!r}"
        problems += [
            f"{where}: produces to unknown topic {n!r}" for n in service.produces if n not in topics
        ]
        problems += [
            f"{where}: publishes to unknown exchange {n!r}"
            for n in service.publishes_to_exchanges
            if n not in exchanges
        ]
        groups, workers = catalog.groups_of(service.name), catalog.workers_of(service.name)
        if service.role is Role.CONSUMER and not groups:
            problems.append(f"{where}: role consumer but no consumer group runs in it")
        if service.role is Role.WORKER and not workers:
            problems.append(f"{where}: role worker but no queue worker runs in it")
        if service.role is Role.API and (groups or workers):
            problems.append(f"{where}: role api must not run consumer groups or queue workers")
    owners: dict[str, list[str]] = {}
    for service in catalog.services:
        for table, _privileges in map(_table_access, service.tables):
            owners.setdefault(table, []).append(service.name)
    problems += [
        f"table {table!r}: listed by {' and '.join(map(repr, names))}; one service owns a table"
        for table, names in owners.items()
        if len(names) > 1
    ]
    return problems


def _rabbitmq_problems(catalog: Catalog) -> list[str]:
    problems: list[str] = []
    queues = {q.name for q in catalog.queues}
    exchanges = {x.name for x in catalog.exchanges}
    services = {s.name for s in catalog.services}
    for binding in catalog.bindings:
        where = f"binding {binding.exchange!r} -> {binding.queue!r}"
        if binding.exchange not in exchanges:
            problems.append(f"{where}: exchange {binding.exchange!r} is not in the catalog")
        if binding.queue not in queues:
            problems.append(f"{where}: queue {binding.queue!r} is not in the catalog")
    for worker in catalog.queue_workers:
        where = f"queue worker {worker.service!r}"
        if worker.queue not in queues:
            problems.append(f"{where}: queue {worker.queue!r} is not in the catalog")
        if worker.service not in services:
            problems.append(f"{where}: service {worker.service!r} is not in the catalog")
        if not _HANDLER.fullmatch(worker.handler):
            problems.append(
                f"{where}: handler {worker.handler!r} must look like 'package.module:function'"
            )
    return problems


def _event_problems(catalog: Catalog) -> list[str]:
    topics = {t.name for t in catalog.topics}
    exchanges = {x.name for x in catalog.exchanges}
    problems = [
        f"event {e.type!r} v{e.version}: topic {e.topic!r} is not in the catalog"
        for e in catalog.events
        if e.topic is not None and e.topic not in topics
    ]
    problems += [
        f"event {e.type!r} v{e.version}: exchange {e.exchange!r} is not in the catalog"
        for e in catalog.events
        if e.exchange is not None and e.exchange not in exchanges
    ]
    return problems


def _duplicates(kind: str, names: list[str]) -> list[str]:
    counts = Counter(names)
    return [
        f"{kind} {name!r} is declared more than once" for name, n in sorted(counts.items()) if n > 1
    ]


def _one(items: tuple[_T, ...], kind: str, name: str, key: Callable[[_T], str]) -> _T:
    for item in items:
        if key(item) == name:
            return item
    known = ", ".join(key(i) for i in items)
    raise LookupError(f"unknown {kind} {name!r}; known: {known}")
