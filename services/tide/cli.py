"""The `tide` command: run a service, see the platform's state, scale a group by hand; the
other command groups live in `tide.*_commands`."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from tide.auth_commands import auth_app
from tide.catalog_commands import catalog_app
from tide.console import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    GroupOption,
    OutputOption,
    err,
    load_settings,
    out,
)
from tide.db_commands import db_app, outbox_app
from tide.dlq_commands import dead_letter_queues, dlq_app
from tide.settings import MissingSettingError
from tide.topology_commands import rabbitmq_app, registry_app, topics_app

app = typer.Typer(help="Tide: run and operate the event platform.", no_args_is_help=True)
# One module per command group; this one keeps running and watching the platform.
app.add_typer(db_app, name="db")
app.add_typer(outbox_app, name="outbox")
app.add_typer(registry_app, name="registry")
app.add_typer(rabbitmq_app, name="rabbitmq")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(catalog_app, name="catalog")
app.add_typer(auth_app, name="auth")


# `--debug`: a failure prints its traceback instead of one line (set by the callback).
_debug = False


DebugOption = Annotated[bool, typer.Option("--debug", help="on failure, print the traceback too")]
CatalogOption = Annotated[
    Path | None,
    typer.Option(
        "--catalog",
        help="your platform's catalog file (default: $TIDE_CATALOG_FILE)",
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
    from tide.settings import MissingSettingError  # noqa: PLC0415

    kafka = os.environ.get("TIDE_KAFKA_BOOTSTRAP", "(TIDE_KAFKA_BOOTSTRAP unset)")
    if isinstance(exc, KafkaException):
        return EXIT_UNAVAILABLE, f"Kafka at {kafka}: {exc.args[0].str()}"
    if isinstance(exc, TimeoutError | concurrent.futures.TimeoutError):
        return EXIT_UNAVAILABLE, f"Kafka at {kafka} did not answer in time"
    if isinstance(exc, psycopg.OperationalError):
        return EXIT_UNAVAILABLE, f"PostgreSQL: {str(exc).strip().splitlines()[0]}"
    if isinstance(exc, PlatformUnavailableError | ConnectionError):
        return EXIT_UNAVAILABLE, str(exc)
    if isinstance(exc, MissingSettingError):
        return EXIT_CONFIG, str(exc)
    return 1, f"{type(exc).__name__}: {exc}"


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
    groups = [q.group for q in dead_letter_queues(settings, group)]
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
