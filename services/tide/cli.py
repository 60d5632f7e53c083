"""The `tide` command: run services, prepare databases and registries."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
from pydantic import ValidationError
from rich.table import Table

from tide.auth_commands import auth_app
from tide.catalog_commands import catalog_app
from tide.console import EXIT_CONFIG, EXIT_UNAVAILABLE, EXIT_USAGE, err, out
from tide.needs import command_needs
from tide.observability import configure_logging
from tide.settings import MissingSettingError, Settings

app = typer.Typer(help="Tide: run and operate the event platform.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL event store.", no_args_is_help=True)
registry_app = typer.Typer(help="The schema registry.", no_args_is_help=True)
rabbitmq_app = typer.Typer(help="RabbitMQ topology.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(registry_app, name="registry")
app.add_typer(rabbitmq_app, name="rabbitmq")
app.add_typer(topics_app, name="topics")
app.add_typer(catalog_app, name="catalog")
app.add_typer(auth_app, name="auth")


# `--debug`: a failure prints its traceback instead of one line (set by the callback).
_debug = False


DebugOption = Annotated[bool, typer.Option("--debug", help="on failure, print the traceback too")]
CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="your platform's catalog file (default: $TIDE_CATALOG_FILE, else the"
        " reference OTT platform)",
        dir_okay=False,
    ),
]


def global_options(debug: bool, catalog: Path | None) -> None:
    """`--debug` and `--catalog`, for `tide` and `tide-dev` alike."""
    global _debug  # noqa: PLW0603 - one flag for the whole invocation
    _debug = debug
    if catalog is not None:
        # Through the environment, so every child `tide-dev run` starts gets it too.
        os.environ["TIDE_CATALOG_FILE"] = str(catalog.resolve())


@app.callback()
def _options(debug: DebugOption = False, catalog: CatalogOption = None) -> None:
    global_options(debug, catalog)


def main(application: typer.Typer = app) -> None:
    """The `tide` command. A failure ends it with one line and its exit code: 4 when a
    broker, the database or the registry did not answer (or refused us), 1 otherwise;
    `tide --debug ...` shows the traceback instead."""
    try:
        application()  # usage errors, --help and a command's typer.Exit end in sys.exit here
    except Exception as exc:
        if _debug:
            raise
        code, line = _explain(exc)
        err.print(f"error: {line}")
        if code == 1:
            err.print("run it again with --debug for the traceback")
        sys.exit(code)


def _explain(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line for a failure no command handled itself."""
    import psycopg  # noqa: PLC0415
    from confluent_kafka import KafkaException  # noqa: PLC0415

    from tide.errors import PlatformUnavailableError  # noqa: PLC0415

    kafka = os.environ.get("TIDE_KAFKA_BOOTSTRAP", "(TIDE_KAFKA_BOOTSTRAP unset)")
    if isinstance(exc, KafkaException):
        return EXIT_UNAVAILABLE, f"Kafka at {kafka}: {exc.args[0].str()}"
    if isinstance(exc, TimeoutError | concurrent.futures.TimeoutError):
        return EXIT_UNAVAILABLE, f"Kafka at {kafka} did not answer in time"
    if isinstance(exc, psycopg.OperationalError):
        return EXIT_UNAVAILABLE, f"PostgreSQL: {str(exc).strip().splitlines()[0]}"
    if isinstance(exc, PlatformUnavailableError | ConnectionError):
        return EXIT_UNAVAILABLE, str(exc)
    return 1, f"{type(exc).__name__}: {exc}"


def load_settings(*required: str) -> Settings:
    """Settings from TIDE_*; a missing or invalid one ends the command with exit code 3."""
    try:
        settings = Settings()
        settings.require(*required)
    except ValidationError as exc:
        # One line per bad setting, naming it: "TIDE_LOG_LEVEL='LOUD' is not one of ...".
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            if "TIDE_" not in message:  # pydantic's own messages do not name the variable
                message = f"TIDE_{str(error['loc'][0]).upper()}: {message}"
            err.print(f"error: {message}")
        raise typer.Exit(EXIT_CONFIG) from None
    except (ValueError, MissingSettingError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


@app.command()
def run(
    service: Annotated[str | None, typer.Argument(help="catalog service to run")] = None,
) -> None:
    """Run one service, as its container does (`tide-dev run` runs them all here)."""
    from tide.launch import (  # noqa: PLC0415
        NotDrainedError,
        NotRunnableError,
        PortInUseError,
        QueueMissingError,
        RunnerDiedError,
        run_service,
    )

    settings = load_settings()
    catalog = settings.catalog()
    known = [s.name for s in catalog.services]
    if service is None:
        err.print("error: name a service; known: " + ", ".join(known))
        raise typer.Exit(EXIT_USAGE)
    if service not in known:
        err.print(f"error: unknown service {service!r}; known: " + ", ".join(known))
        raise typer.Exit(EXIT_USAGE)
    try:
        run_service(service, settings, catalog)
    except (MissingSettingError, NotRunnableError, PortInUseError, QueueMissingError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None
    except (RunnerDiedError, NotDrainedError) as exc:
        # Logged with its traceback where it died; exit 1 so it is started again.
        err.print(f"error: {exc}")
        raise typer.Exit(1) from None


@db_app.command("migrate")
def migrate(
    grant: Annotated[
        bool,
        typer.Option(
            "--grant",
            help="then give each catalog service's role exactly its privileges, waiting"
            " for the roles to exist (CloudNativePG makes managed roles after the cluster)",
        ),
    ] = False,
    wait: Annotated[
        float, typer.Option(min=0, help="seconds to wait for the roles (with --grant)")
    ] = 300.0,
) -> None:
    """Apply Tide's migrations, then the SQL files of the catalog's `migrations` package
    (idempotent; safe to run from several pods), as the schema's owner."""
    import psycopg  # noqa: PLC0415

    from tide.store.grants import database_services, grant_when_roles_exist  # noqa: PLC0415
    from tide.store.migrations import migrate as apply  # noqa: PLC0415

    settings = load_settings(*command_needs(("db", "migrate")).required_settings)
    dsn = settings.postgres_dsn.get_secret_value()
    catalog = settings.catalog()
    try:
        applied = apply(dsn, catalog)
        out.print(
            f"applied migrations: {', '.join(applied)}" if applied else "database is up to date"
        )
        if grant:
            with err.status(f"waiting for the roles of {len(database_services(catalog))} services"):
                granted = grant_when_roles_exist(dsn, catalog, timeout=wait)
            for role, tables in granted.items():
                out.print(f"role {role}: " + (", ".join(sorted(tables)) or "no tables"))
    except psycopg.OperationalError as exc:
        _postgres_unreachable(dsn, exc)
    except (TimeoutError, LookupError, ValueError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


def _postgres_unreachable(dsn: str, exc: Exception) -> NoReturn:
    import psycopg  # noqa: PLC0415

    where = psycopg.conninfo.conninfo_to_dict(dsn)
    err.print(
        f"error: cannot reach PostgreSQL at {where.get('host')}:{where.get('port')}"
        f" (database {where.get('dbname')}): {str(exc).strip().splitlines()[0]}"
    )
    raise typer.Exit(EXIT_UNAVAILABLE) from None


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[Any]:
    """A connection to the event store, or exit 4 naming where PostgreSQL was not reached."""
    import psycopg  # noqa: PLC0415

    from tide.errors import pg_conninfo  # noqa: PLC0415

    dsn = settings.postgres_dsn.get_secret_value()
    try:
        conn = psycopg.connect(pg_conninfo(dsn), autocommit=True)
    except psycopg.OperationalError as exc:
        _postgres_unreachable(dsn, exc)
    with conn:
        yield conn


@registry_app.command("register")
def register() -> None:
    """Register every catalog schema, with compatibility BACKWARD on its subject."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient  # noqa: PLC0415
    from confluent_kafka.schema_registry.error import SchemaRegistryError  # noqa: PLC0415

    from tide.events.schemas import schema_text  # noqa: PLC0415

    settings = load_settings(*command_needs(("registry", "register")).required_settings)
    url = settings.schema_registry_url
    client = SchemaRegistryClient.new_client({"url": url})
    for event in settings.catalog().events:
        try:
            client.set_compatibility(event.subject, "BACKWARD")
            schema_id = client.register_schema(event.subject, Schema(schema_text(event), "JSON"))
        except SchemaRegistryError as exc:
            err.print(f"error: the schema registry at {url} refused {event.subject}: {exc}")
            raise typer.Exit(1) from None
        # The client raises its HTTP library's transport errors (httpx or httpx2, by install).
        except Exception as exc:  # noqa: BLE001
            err.print(f"error: cannot reach the schema registry at {url}: {exc}")
            raise typer.Exit(EXIT_UNAVAILABLE) from None
        out.print(f"{event.subject}: schema id {schema_id}")


@rabbitmq_app.command("definitions")
def definitions() -> None:
    """Print the catalog's RabbitMQ topology as definitions (for rabbitmqctl import_definitions)."""
    from tide.rabbitmq.definitions import definitions as render  # noqa: PLC0415

    out.print_json(json.dumps(render(load_settings().catalog())))


@topics_app.command("create")
def create_topics(
    replication_factor: Annotated[int, typer.Option(min=1, help="replicas per partition")] = 1,
) -> None:
    """Create every catalog topic, retry topic and DLQ that does not exist yet (local runs;
    on Kubernetes the KafkaTopic resources do this)."""
    from tide.kafka.topics import ensure_topics  # noqa: PLC0415

    settings = load_settings("kafka_bootstrap")
    created = ensure_topics(
        settings.kafka_client_config(),
        settings.catalog().all_topics(),
        replication_factor=replication_factor,
    )
    for name in created:
        out.print(f"created {name}")
    if not created:
        out.print("all topics exist")


outbox_app = typer.Typer(
    help="Outbox rows that can never be published, set aside by the relay.", no_args_is_help=True
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("ls")
def outbox_ls(
    limit: Annotated[int, typer.Option(min=1, help="at most this many rows")] = 50,
    output: OutputOption = "table",
) -> None:
    """The outbox rows the relay set aside, oldest first, with why."""
    from tide.store.outbox import dead_letters  # noqa: PLC0415

    settings = load_settings("postgres_dsn")
    with _database(settings) as conn:
        rows = dead_letters(conn, limit=limit)
    if output == "json":
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table("id", "event_id", "type", "reason", "failed_at")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@outbox_app.command("resend")
def outbox_resend(
    ids: Annotated[list[int] | None, typer.Argument(help="row ids (see `tide outbox ls`)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every row set aside")] = False,
) -> None:
    """Put set-aside rows back in the outbox (after fixing their data or the schema); the
    relay publishes them, or sets them aside again with the new reason."""
    from tide.store.outbox import resend  # noqa: PLC0415

    if not ids and not all_:
        err.print("error: name row ids or pass --all")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings("postgres_dsn")
    with _database(settings) as conn:
        moved = resend(conn, None if all_ else list(ids or []))
    out.print(f"{moved} row(s) back in the outbox")


dlq_app = typer.Typer(
    help="Dead letters: inspect them, send them back after a fix.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")

GroupOption = Annotated[
    str | None, typer.Option("--group", "-g", help="consumer group (default: every group)")
]
FilterOption = Annotated[
    str | None, typer.Option("--filter", help="only records matching, e.g. type=video.rated")
]
OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]


def _dead_letter_queues(settings: Settings, group: str | None) -> list[Any]:
    from tide.dlq import DeadLetterQueue  # noqa: PLC0415

    catalog = settings.catalog()
    names = [g.name for g in catalog.consumer_groups]
    if group is not None and group not in names:
        err.print(f"error: unknown group {group!r}; known: " + ", ".join(names))
        raise typer.Exit(EXIT_USAGE)
    chosen = [g for g in catalog.consumer_groups if group is None or g.name == group]
    return [DeadLetterQueue(settings.kafka_client_config(), g) for g in chosen]


def _event_type(filter_: str | None) -> str | None:
    if filter_ is None:
        return None
    key, _, value = filter_.partition("=")
    if key != "type" or not value:
        err.print(f"error: --filter must look like type=<event type>, got {filter_!r}")
        raise typer.Exit(EXIT_USAGE)
    return value


@dlq_app.command("ls")
def dlq_ls(group: GroupOption = None, output: OutputOption = "table") -> None:
    """Depth and the latest reason of each group's DLQ."""
    settings = load_settings("kafka_bootstrap")
    rows = []
    for queue in _dead_letter_queues(settings, group):
        depth = queue.depth()
        latest = queue.show(limit=depth)[-1:] if depth else []
        rows.append(
            {
                "group": queue.group.name,
                "dlq": queue.group.dlq_topic,
                "depth": depth,
                "last_reason": latest[0].reason if latest else "",
                "last_error": latest[0].error if latest else "",
            }
        )
    if output == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table("group", "dlq", "depth", "last reason", "last error")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@dlq_app.command("show")
def dlq_show(
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")],
    filter_: FilterOption = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many records")] = 20,
    output: OutputOption = "table",
) -> None:
    """The dead letters of one group, oldest first, with why they died."""
    settings = load_settings("kafka_bootstrap")
    (queue,) = _dead_letter_queues(settings, group)
    letters = queue.show(limit=limit, event_type=_event_type(filter_))
    rows = [
        {
            "partition": d.partition,
            "offset": d.offset,
            "type": d.event_type,
            "id": d.event_id,
            "reason": d.reason,
            "attempt": d.attempt,
            "error": d.error,
            "from": d.origin,
        }
        for d in letters
    ]
    if output == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table("partition", "offset", "type", "id", "reason", "attempt", "error", "from")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out.print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    group: Annotated[str, typer.Option("--group", "-g", help="consumer group")],
    filter_: FilterOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="at most this many records")] = None,
    to: Annotated[
        str, typer.Option(help="retry (the group's own retry topic) or original")
    ] = "retry",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report, change nothing")] = False,
    output: OutputOption = "table",
) -> None:
    """Send dead letters back (after the fix). Safe to interrupt and run again."""
    if to not in {"retry", "original"}:
        err.print(f"error: --to must be retry or original, got {to!r}")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings("kafka_bootstrap")
    (queue,) = _dead_letter_queues(settings, group)
    with out.status(f"redriving {queue.group.dlq_topic}"):
        report = queue.redrive(
            limit=limit,
            event_type=_event_type(filter_),
            to_original=to == "original",
            dry_run=dry_run,
        )
    summary = {
        "group": group,
        "redriven": report.redriven,
        "skipped": report.skipped,
        "destinations": report.destinations,
        "dry_run": dry_run,
        "remaining": queue.depth(),
    }
    if output == "json":
        out.print_json(json.dumps(summary))
        return
    verb = "would redrive" if dry_run else "redrove"
    out.print(
        f"{verb} {report.redriven} record(s) from {queue.group.dlq_topic};"
        f" {summary['remaining']} left"
    )
    for topic, count in report.destinations.items():
        out.print(f"  {count} -> {topic}")


def _kubeconfig_present() -> bool:
    from pathlib import Path  # noqa: PLC0415

    return bool(os.environ.get("KUBECONFIG")) or (Path.home() / ".kube" / "config").exists()


@app.command()
def status(
    group: GroupOption = None,
    watch: Annotated[bool, typer.Option("--watch", help="refresh every 2 s until Ctrl-C")] = False,
    output: OutputOption = "table",
    namespace: Annotated[
        str, typer.Option(help="the services' namespace, for the replicas column")
    ] = "tide-apps",
    cluster: Annotated[
        bool | None,
        typer.Option(
            "--cluster/--no-cluster",
            help="add replicas from Kubernetes and KEDA (default: when a kubeconfig exists)",
        ),
    ] = None,
) -> None:
    """Per consumer group: members, lag (per partition and total), retry backlog, DLQ depth,
    and with a cluster the service's replicas: ready/desired/KEDA max."""
    from rich.live import Live  # noqa: PLC0415

    from tide.scaling import Replicas, cluster_replicas  # noqa: PLC0415
    from tide.status import group_status  # noqa: PLC0415

    settings = load_settings("kafka_bootstrap")
    groups = [q.group for q in _dead_letter_queues(settings, group)]
    with_cluster = _kubeconfig_present() if cluster is None else cluster

    def replicas() -> dict[str, Replicas | None]:
        if not with_cluster:
            return {}
        try:
            return cluster_replicas(sorted({g.service for g in groups}), namespace)
        except Exception as exc:  # noqa: BLE001 - the Kafka view still stands on its own
            err.print(f"warning: no replicas from the cluster: {exc}")
            return {}

    def rows() -> list[dict[str, Any]]:
        scaled = replicas()
        found = []
        for g in groups:
            row = group_status(settings.kafka_client_config(), g).as_dict()
            if with_cluster:
                seen = scaled.get(g.service)
                row["replicas"] = None if seen is None else vars(seen)
                row["replicas_text"] = "-" if seen is None else str(seen)
            found.append(row)
        return found

    def table() -> Table:
        columns = ["group", "members", "lag", "retry backlog", "dlq", "last dead letter"]
        if with_cluster:
            columns.insert(2, "replicas (ready/want/max)")
        view = Table(*columns)
        for row in rows():
            cells = [
                row["group"],
                str(row["members"]),
                str(row["lag"]),
                str(row["retry_backlog"]),
                str(row["dlq_depth"]),
                row["last_dead_letter_reason"],
            ]
            if with_cluster:
                cells.insert(2, row["replicas_text"])
            view.add_row(*cells)
        return view

    if output == "json":
        found = rows()
        for row in found:
            row.pop("replicas_text", None)
        out.print_json(json.dumps(found))
        return
    if not watch:
        out.print(table())
        return
    stop = threading.Event()
    with Live(table(), console=out, refresh_per_second=1) as live:
        try:
            while not stop.wait(2):
                live.update(table())
        except KeyboardInterrupt:
            pass


@app.command()
def scale(
    service: Annotated[str, typer.Argument(help="catalog service")],
    replicas: Annotated[str, typer.Argument(help="a number, or auto to resume autoscaling")],
    namespace: Annotated[str, typer.Option(help="the services' namespace")] = "tide-apps",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the patches, send nothing")
    ] = False,
) -> None:
    """Scale a consumer group or worker by hand, and keep KEDA from undoing it (`auto` resumes)."""
    from tide.scaling import ScaleRefusedError, apply, scale_plan  # noqa: PLC0415

    if replicas != "auto" and not replicas.isdigit():
        err.print(f"error: replicas must be a number or auto, got {replicas!r}")
        raise typer.Exit(EXIT_USAGE)
    target: int | Literal["auto"] = "auto" if replicas == "auto" else int(replicas)
    try:
        plan = scale_plan(load_settings().catalog(), service, target, namespace)
    except ScaleRefusedError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    for patch in plan:
        out.print(f"{patch.kind} {patch.namespace}/{patch.name}: {json.dumps(patch.body)}")
    if not dry_run:
        apply(plan)
