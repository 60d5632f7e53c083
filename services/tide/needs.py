"""What each Tide process connects to, from what `tide.launch` builds for it.

The runner checks its settings against these needs before it starts, and the
Pulumi program gives the process exactly the settings, secrets and egress these
needs name: the deployment is derived from the code, never declared beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tide.topology import Catalog, Role


class Dependency(StrEnum):
    """A platform service a process connects to; the value names its port in the data namespace."""

    KAFKA = "kafka"
    POSTGRES = "postgres"
    RABBITMQ = "rabbitmq"
    SCHEMA_REGISTRY = "registry"

    @property
    def setting(self) -> str:
        """The `tide.settings.Settings` field that says where it is."""
        return _SETTINGS[self]

    @property
    def variable(self) -> str:
        """The environment variable that sets it."""
        return f"TIDE_{self.setting.upper()}"


_SETTINGS = {
    Dependency.KAFKA: "kafka_bootstrap",
    Dependency.POSTGRES: "postgres_dsn",
    Dependency.RABBITMQ: "rabbitmq_url",
    Dependency.SCHEMA_REGISTRY: "schema_registry_url",
}


@dataclass(frozen=True, kw_only=True)
class Needs:
    """What one process cannot start without, and what it uses when it is given."""

    required: frozenset[Dependency] = frozenset()
    # The registry: without a URL the codec validates locally and writes plain JSON
    # (tide.codecs.json_schema), which is how tests and local runs work. A deployment
    # has one, and a process there must reach it to read registry-framed records.
    optional: frozenset[Dependency] = frozenset()

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        """All a deployment gives the process (settings, secrets, egress), in a fixed order."""
        return tuple(d for d in Dependency if d in self.required or d in self.optional)

    @property
    def required_settings(self) -> tuple[str, ...]:
        """The settings the process exits 3 without (`Settings.require`)."""
        return tuple(d.setting for d in Dependency if d in self.required)


class ProcessKind(StrEnum):
    """What a service's process is, by its catalog role; `tide.launch` starts its loops."""

    API = "api"  # the app the catalog's `app` builds, publishing to Kafka
    CONSUMER_GROUPS = "consumer-groups"  # a ConsumerRunner per catalog consumer group
    QUEUE_WORKERS = "queue-workers"  # a QueueConsumer per catalog queue worker


_KAFKA_CODEC = frozenset({Dependency.SCHEMA_REGISTRY})


def kind_of(catalog: Catalog, service_name: str) -> ProcessKind:
    """The kind of process `tide.launch` starts for a service, by its role."""
    match catalog.service(service_name).role:
        case Role.API:
            return ProcessKind.API
        case Role.CONSUMER:
            return ProcessKind.CONSUMER_GROUPS
        case Role.WORKER:
            return ProcessKind.QUEUE_WORKERS


def process_needs(catalog: Catalog, service_name: str) -> Needs:
    """What `tide run <service_name>` connects to, as `tide.launch` builds its process."""
    kind = kind_of(catalog, service_name)
    kafka, postgres = Dependency.KAFKA, Dependency.POSTGRES
    match kind:
        case ProcessKind.API:
            # The app publishes what it accepts; one that keeps state (an event store and
            # its outbox, say) says so in the catalog.
            service = catalog.service(service_name)
            required = {kafka, postgres} if service.database or service.tables else {kafka}
            return Needs(required=frozenset(required), optional=_KAFKA_CODEC)
        case ProcessKind.CONSUMER_GROUPS:
            # Every group records its exactly-once marks in PostgreSQL (tide.store.processed),
            # whatever its handler does; events bound for an exchange go through RabbitMQ.
            required = {kafka, postgres}
            if catalog.service(service_name).publishes_to_exchanges:
                required.add(Dependency.RABBITMQ)
            return Needs(required=frozenset(required), optional=_KAFKA_CODEC)
        case ProcessKind.QUEUE_WORKERS:
            # AMQP bodies are plain JSON: no registry. Marks are kept in PostgreSQL.
            return Needs(required=frozenset({Dependency.RABBITMQ, postgres}))


# The one-shot commands the platform's Jobs run (infra/components/jobs.py).
_COMMANDS: dict[tuple[str, ...], Needs] = {
    ("db", "migrate"): Needs(required=frozenset({Dependency.POSTGRES})),
    ("registry", "register"): Needs(required=frozenset({Dependency.SCHEMA_REGISTRY})),
}


def command_needs(command: Sequence[str], catalog: Catalog | None = None) -> Needs:
    """What an image command line needs, e.g. `["tide", "db", "migrate", "--grant"]` (options
    change what a command does, not what it connects to); `tide run <service>` is that
    service's process_needs in `catalog`. LookupError for a command with no known needs."""
    args = tuple(arg for arg in command if not arg.startswith("-"))
    if args[:1] == ("tide",):
        args = args[1:]
    if len(args) == 2 and args[0] == "run":
        if catalog is None:
            raise LookupError(f"`tide run {args[1]}` needs the catalog that names the service")
        return process_needs(catalog, args[1])
    needs = _COMMANDS.get(args)
    if needs is None:
        known = ", ".join(f"tide {' '.join(c)}" for c in (*_COMMANDS, ("run", "<service>")))
        raise LookupError(f"no needs are known for `tide {' '.join(args)}`; known: {known}")
    return needs
