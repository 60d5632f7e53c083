"""The `tide-dev` command: the platform as processes on this machine, and what runs beside it.

None of this is in the service image: on Kubernetes the kubelet supervises the services,
Strimzi's Kafka Exporter serves the lag, and the cluster chaos suite (`make chaos`) breaks
things. Options and exit codes are `tide`'s own.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server

from ott.catalog import REFERENCE_CATALOG
from tide.cli import CatalogOption, DebugOption, global_options
from tide.cli import main as tide_main
from tide.console import EXIT_CONFIG, EXIT_USAGE, OutputOption, err, load_settings, out
from tide.kafka.topics import ensure_topics
from tide.observability import configure_logging
from tide.store.migrations import migrate
from tide.waiting import until_terminated
from tide_dev.chaos.control import CONTROL_URL_VARIABLE, HttpBrokerControl
from tide_dev.chaos.experiments import EXPERIMENTS, Chaos, start_platform
from tide_dev.chaos.processes import LocalPlatform
from tide_dev.issuer import LocalIssuer
from tide_dev.kafka_exporter import KafkaExporterCollector
from tide_dev.supervisor import Supervisor

app = typer.Typer(
    help="Tide on this machine: every service as a process, lag for Prometheus, chaos.",
    no_args_is_help=True,
)

EXIT_VIOLATED = 1
BROKER_EXPERIMENTS = {"stop-rabbitmq", "restart-kafka"}


@app.callback()
def _options(debug: DebugOption = False, catalog: CatalogOption = None) -> None:
    global_options(debug, catalog)
    # The runtime has no catalog of its own; the tools run the reference platform's unless
    # `--catalog` or the environment names another.
    os.environ.setdefault("TIDE_CATALOG_FILE", str(REFERENCE_CATALOG))


def main() -> None:
    """The `tide-dev` command; failures end as `tide`'s do."""
    tide_main(app)


@app.command()
def run() -> None:
    """Every catalog service as a supervised child process (`tide run <service>`), each on
    its own HTTP port from TIDE_HTTP_PORT (8080) up; restarted when it dies; Ctrl-C or
    SIGTERM drains them all."""
    services = [service.name for service in load_settings().catalog().services]
    configure_logging("text", "INFO")
    base = int(os.environ.get("TIDE_HTTP_PORT", "8080"))
    supervisor = Supervisor(services, base)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    signal.signal(signal.SIGINT, lambda *_: supervisor.stop())
    code = supervisor.run()
    if code:
        raise typer.Exit(code)


@app.command("kafka-exporter")
def kafka_exporter(
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of /metrics")] = 9308,
) -> None:
    """Serve consumer-group lag, members and partition end offsets under kafka_exporter's
    names, for a Prometheus off the cluster (`make local`). On Kubernetes, Strimzi's Kafka
    Exporter serves them."""
    settings = load_settings("kafka_bootstrap")
    registry = CollectorRegistry()
    collector = KafkaExporterCollector(settings.kafka_client_config(), settings.catalog())
    registry.register(collector)
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    err.print(f"kafka-exporter: serving http://127.0.0.1:{port}/metrics")
    try:
        until_terminated()
    finally:
        server.shutdown()
        collector.close()


@app.command()
def chaos(
    experiment: Annotated[str, typer.Argument(help="which experiment (see the list in --help)")],
    output: OutputOption = "table",
    rate: Annotated[float, typer.Option(min=1, help="API requests per second under load")] = 25,
    p99_bound_ms: Annotated[float, typer.Option(help="the steady state's p99 bound")] = 500,
) -> None:
    """Run one local chaos experiment against the brokers in TIDE_* and print its report.

    Starts the platform as local processes (as `tide-dev run` does), checks the steady
    state, injects the fault under load and checks that nothing was lost. Experiments:
    kill-group, freeze-consumer, poison-storm, and (they need `make brokers`, which sets
    TIDE_CHAOS_CONTROL_URL) stop-rabbitmq, restart-kafka. Exit code 1 when the hypothesis
    did not hold.
    """
    if experiment not in EXPERIMENTS:
        err.print(f"error: unknown experiment {experiment!r}; known: " + ", ".join(EXPERIMENTS))
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings("kafka_bootstrap", "postgres_dsn", "rabbitmq_url")
    control_url = os.environ.get(CONTROL_URL_VARIABLE, "")
    if experiment in BROKER_EXPERIMENTS and not control_url:
        err.print(
            f"error: {experiment} stops a broker: set {CONTROL_URL_VARIABLE} "
            "(`make brokers` prints it) or run the chaos suite (`make test`)"
        )
        raise typer.Exit(EXIT_CONFIG)
    catalog = settings.catalog()
    client = settings.kafka_client_config()
    dsn = settings.postgres_dsn.get_secret_value()
    workdir = Path(tempfile.mkdtemp(prefix=f"tide-chaos-{experiment}-"))
    env = {k: v for k, v in os.environ.items() if k.startswith("TIDE_")}
    # The API takes only tokens from an issuer made for this run, as on a cluster.
    issuer = LocalIssuer().start()
    platform = LocalPlatform(env, workdir, issuer=issuer)
    control = HttpBrokerControl(control_url) if control_url else None
    run = Chaos(platform, catalog, client, dsn, control, rate=rate, p99_bound_ms=p99_bound_ms)
    with err.status("preparing topics and the database") as progress:
        ensure_topics(client, catalog.all_topics())
        migrate(dsn, catalog)
        progress.update(f"starting the platform ({len(catalog.services)} services)")
        try:
            start_platform(run)
            progress.update(f"running {experiment}: hypothesis, fault, observation")
            report = EXPERIMENTS[experiment](run)
        except (TimeoutError, RuntimeError) as exc:
            platform.stop()
            issuer.stop()
            err.print(f"error: {experiment} could not run: {exc}")
            err.print(f"service logs: {workdir}")
            raise typer.Exit(EXIT_VIOLATED) from None
        progress.update("stopping the platform")
        problems = platform.stop()
        issuer.stop()
    for problem in problems:
        report.expect(False, problem)
    if output == "json":
        out.print_json(json.dumps(report.as_dict()))
    else:
        out.print(report.render(), highlight=False, soft_wrap=True)
        err.print(f"service logs: {workdir}")
    if not report.held:
        raise typer.Exit(EXIT_VIOLATED)


if __name__ == "__main__":
    main()
