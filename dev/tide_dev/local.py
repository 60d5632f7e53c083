"""`make local`: the whole platform on this machine, without Docker, watched by Prometheus.

One command, in order:
  brokers    Kafka (with the JMX exporter agent), RabbitMQ (with rabbitmq_prometheus) and
             PostgreSQL, started by the test harness, or the ones TIDE_* names (`make brokers`
             in another terminal: they are then reused and left running);
  topology   the catalog's topics, the event store's migrations, RabbitMQ's definitions;
  services   every catalog service as `tide-dev run` runs them: supervised child processes,
             restarted when they die, their logs in the work directory;
  monitoring `tide-dev kafka-exporter`, Debian's PostgreSQL exporter and Prometheus, loaded
             with the rule groups the Pulumi program deploys (infra.alerts.rule_groups),
             scraping every service, Kafka, both exporters and RabbitMQ;
  workload   a steady stream of finished watches posted to the player API, and subscription
             commands (start, renew, cancel) at a tenth of that rate;
then a live view (tide_dev.local_view) until Ctrl-C, which stops everything it started.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from infra.alerts import rule_groups
from rich.console import Console

from ott.catalog import REFERENCE_CATALOG
from tide.catalog_file import CatalogFileError, read_catalog
from tide.kafka.topics import ensure_topics
from tide.rabbitmq.definitions import definitions
from tide.settings import Settings
from tide.store.migrations import migrate
from tide.topology import Catalog, Role
from tide.waiting import wait_until
from tide_dev.brokers import Brokers, BrokerSession
from tide_dev.chaos.experiments import catalogue
from tide_dev.chaos.probes import Ledger
from tide_dev.chaos.workload import ApiLoad, SubscriptionLoad
from tide_dev.errors import HarnessError
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess, require
from tide_dev.prometheus import PrometheusServer
from tide_dev.supervisor import Supervisor

READY_TIMEOUT_S = 120.0


@dataclass
class LocalStack:
    """Everything `make local` runs on top of the brokers; `start` then `stop`.

    `catalog_file` is the platform's catalog (TIDE_CATALOG_FILE), by default the reference
    OTT platform's, which the reference workload drives. A platform of your own gets no
    workload: its traffic is its clients'.
    `catalog_suffix` isolates the platform's topics, groups and queues (Catalog.isolated),
    so the alert tests share the session's brokers with the other tests. `interval` is
    Prometheus's scrape and evaluation interval; `rules` defaults to what the program
    deploys for this catalog.
    """

    session: BrokerSession
    brokers: Brokers
    workdir: Path
    catalog_file: str = str(REFERENCE_CATALOG)
    catalog_suffix: str = ""
    interval: str = "5s"
    rules: list[dict[str, Any]] | None = None
    rate: float = 20.0
    # The APIs take only this issuer's tokens, as on a cluster (tide.auth); its key is
    # made here, at start, and dies with the run.
    issuer: LocalIssuer = field(default_factory=lambda: LocalIssuer().start())
    supervisor: Supervisor | None = None
    prometheus: PrometheusServer | None = None
    load: ApiLoad | None = None
    commands: SubscriptionLoad | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _exporter: ManagedProcess | None = None
    _exporter_port: int = 0
    _pg_exporter: ManagedProcess | None = None
    _pg_exporter_port: int = 0
    _thread: threading.Thread | None = None
    _ended: list[int] = field(default_factory=list)  # the supervisor's exit code, once it ends

    @property
    def env(self) -> dict[str, str]:
        env = self.brokers.as_env() | self.issuer.settings()
        env["TIDE_CATALOG_FILE"] = self.catalog_file
        if self.catalog_suffix:
            env["TIDE_CATALOG_SUFFIX"] = self.catalog_suffix
        return env

    @functools.cached_property
    def settings(self) -> Settings:
        return Settings.model_validate(
            {k.removeprefix("TIDE_").lower(): v for k, v in self.env.items()}
        )

    @functools.cached_property  # the view asks for it every frame
    def catalog(self) -> Catalog:
        return self.settings.catalog()

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def api_service(self) -> str:
        """The API the live view reports on (and the workload posts to): the catalog's
        public one, else its first."""
        front = self.catalog.front_api()
        return front.name if front is not None else ""

    @property
    def api_url(self) -> str:
        return self.url(self.api_service)

    def url(self, service: str) -> str:
        if not service:
            return "(no API)"
        child = next(c for c in self._supervisor.children if c.service == service)
        return f"http://127.0.0.1:{child.port}"

    @property
    def _supervisor(self) -> Supervisor:
        assert self.supervisor is not None, "the stack is not started"
        return self.supervisor

    def start(
        self, step: Callable[[str], None] = lambda _: None, *, began: float | None = None
    ) -> None:
        """Start everything; `timings` gets the seconds from `began` (default: now) at which
        each part was up."""
        began = time.monotonic() if began is None else began
        self.logs.mkdir(parents=True, exist_ok=True)
        settings, catalog = self.settings, self.catalog
        step("topology: topics, migrations, RabbitMQ definitions")
        ensure_topics(settings.kafka_client_config(), catalog.all_topics())
        migrate(settings.postgres_dsn.get_secret_value(), catalog)
        # The roles a cluster's services connect as; a PostgreSQL of the user's own (its
        # DSN given) is left as it is, and every service connects with that DSN.
        roles = (
            {} if self.session.postgres is None else self.session.postgres.service_roles(catalog)
        )
        if self.session.rabbitmq is not None:
            self.session.rabbitmq.import_definitions(definitions(catalog))
        self._lap("topology", began)

        step(f"services: {len(catalog.services)} under supervision")
        services = [s.name for s in catalog.services]
        self.supervisor = Supervisor(
            services, free_port(len(services)), env=self.env, env_of=roles, log_dir=self.logs
        )
        supervisor = self.supervisor
        self._thread = threading.Thread(
            target=lambda: self._ended.append(supervisor.run()), name="supervisor", daemon=True
        )
        self._thread.start()

        step("monitoring: kafka-exporter and Prometheus")
        self._exporter_port = free_port()
        self._exporter = ManagedProcess(
            "kafka-exporter",
            [
                sys.executable,
                "-m",
                "tide_dev.cli",
                "kafka-exporter",
                "--port",
                str(self._exporter_port),
            ],
            log=self.logs / "kafka-exporter.log",
            env={**os.environ, **self.env},
        )
        self._exporter.start()
        self._pg_exporter_port = free_port()
        self._pg_exporter = ManagedProcess(
            "postgres-exporter",
            [
                require("prometheus-postgres-exporter", search=["/usr/bin"]),
                f"--web.listen-address=127.0.0.1:{self._pg_exporter_port}",
            ],
            log=self.logs / "postgres-exporter.log",
            env={
                **os.environ,
                "DATA_SOURCE_NAME": settings.postgres_dsn.get_secret_value(),
            },
        )
        self._pg_exporter.start()
        self.prometheus = PrometheusServer(
            self.workdir / "prometheus",
            scrape_configs=self.scrape_configs(),
            rule_groups=self.rules if self.rules is not None else rule_groups(catalog),
            interval=self.interval,
        )
        self.prometheus.start()
        self._lap("monitoring", began)

        step("services: waiting until every one is ready")
        wait_until(
            self._all_ready,
            timeout=READY_TIMEOUT_S,
            what="every service ready",
            interval=0.5,
            alive=self._dead,
        )
        self._lap("services ready", began)

        if Path(self.catalog_file).resolve() != REFERENCE_CATALOG.resolve():
            return  # the reference workload speaks the OTT platform's events only
        step("workload: a catalogue, then watches at a steady rate")
        ledger = Ledger(
            catalog, settings.kafka_client_config(), settings.postgres_dsn.get_secret_value()
        )
        videos = catalogue(ledger)
        token = uuid.uuid4().hex[:6]
        users = [f"local-{token}-{i}" for i in range(16)]
        credentials = self.issuer.headers("tide-local-load")
        self.load = ApiLoad(
            self.api_url, users, videos, rate=self.rate, headers=credentials
        ).start()
        # The other API too, at a tenth of the rate: start, renew, cancel, in turn.
        self.commands = SubscriptionLoad(
            self.url("subscription"),
            users,
            ["basic", "standard", "premium"],
            rate=self.rate / 10,
            headers=credentials,
        ).start()
        self._lap("workload", began)

    def _dead(self) -> str | None:
        """Why the platform cannot come up any more, if a part of it ended."""
        if self._ended:
            return (
                f"the supervisor stopped (exit {self._ended[0]}): a service could not start; "
                f"see {self.logs}"
            )
        for process in (self._exporter, self._pg_exporter):
            if process is not None and (reason := process.exit_reason()) is not None:
                return f"{reason}; see {process.log}"
        return None

    def _lap(self, what: str, began: float) -> None:
        self.timings[what] = round(time.monotonic() - began, 1)

    def _all_ready(self) -> bool:
        for child in self._supervisor.children:
            try:
                response = httpx.get(f"http://127.0.0.1:{child.port}/readyz", timeout=2)
            except httpx.HTTPError:
                return False
            if response.status_code != 200:
                return False
        return True

    def scrape_configs(self) -> list[dict[str, Any]]:
        """What the cluster's ServiceMonitors and PodMonitors select, as static targets.

        Each service target carries `service`, as a ServiceMonitor's target does; the
        broker jobs exist only for brokers this stack started (it knows their ports).
        """
        replicas: dict[str, int] = {}
        targets = []
        for child in self._supervisor.children:
            n = replicas[child.service] = replicas.get(child.service, -1) + 1
            targets.append(
                {
                    "targets": [f"127.0.0.1:{child.port}"],
                    "labels": {"service": child.service, "pod": f"{child.service}-{n}"},
                }
            )
        jobs: list[dict[str, Any]] = [{"job_name": "tide-services", "static_configs": targets}]
        # The exporter reads Kafka at each scrape and the brokers' agents walk their MBeans
        # and queues: a scrape of theirs may take over a second on a busy machine, and a
        # scrape that times out makes the series stale and resets a pending alert.
        interval_s = _seconds(self.interval)
        slow = max(interval_s, 2)
        jobs.append(_job("kafka-exporter", self._exporter_port, slow))
        # The PostgreSQL exporter queries every statistics view at each scrape: it gets the
        # cluster's 15 s, and no rule waits on it.
        jobs.append(_job("postgres", self._pg_exporter_port, max(interval_s, 15)))
        if self.session.kafka is not None:
            jobs.append(_job("kafka", self.session.kafka.metrics_port, slow))
        if self.session.rabbitmq is not None:
            jobs.append(_job("rabbitmq", self.session.rabbitmq.metrics_port, slow))
        return jobs

    def hold(self, service: str) -> int:
        """Stop `service` (every replica) and keep it down: its group loses its members."""
        return self._supervisor.hold(service)

    def release(self, service: str) -> None:
        self._supervisor.release(service)
        wait_until(self._all_ready, timeout=READY_TIMEOUT_S, what=f"{service} ready again")

    def stop(self) -> dict[str, float]:
        """Stop everything this stack started (not the brokers: the session owns them);
        returns how long each part took to stop."""
        took: dict[str, float] = {}

        def timed(what: str, stop: Callable[[], object]) -> None:
            began = time.monotonic()
            stop()
            took[what] = round(time.monotonic() - began, 1)

        # The load first, while the API still answers it; then the services, which the
        # supervisor drains (they are in their own sessions: Ctrl-C reached only us).
        for name, load in (("load", self.load), ("commands", self.commands)):
            if load is not None:
                timed(name, load.stop)
        if self.supervisor is not None and self._thread is not None:
            supervisor, thread = self.supervisor, self._thread
            supervisor.stop()
            timed("services", lambda: thread.join(timeout=120))
        for exporter in (self._exporter, self._pg_exporter):
            if exporter is not None:
                timed(exporter.name, exporter.stop)
        if self.prometheus is not None:
            timed("prometheus", self.prometheus.stop)
        self.issuer.stop()
        return took

    def api_scopes(self) -> set[str]:
        """Every scope an operation of the platform's APIs asks for, as their OpenAPI
        documents say (each operation's security requirement names its scope); an API that
        publishes no document (FastAPI's `openapi_url=None`) adds none. RuntimeError naming
        the API whose document cannot be read."""
        scopes: set[str] = set()
        for service in self.catalog.services:
            if service.role is not Role.API:
                continue
            url = f"{self.url(service.name)}/openapi.json"
            try:
                answer = httpx.get(url, timeout=10)
                if answer.status_code == 404:
                    continue
                answer.raise_for_status()
                document = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise RuntimeError(
                    f"{service.name}'s OpenAPI document ({url}) cannot be read for the scopes"
                    f" of the credentials make local hands out: {exc}"
                ) from None
            for operation in _operations(document):
                for requirement in operation.get("security", []):
                    scopes.update(*requirement.values())
        return scopes

    def write_token(self) -> Path:
        """A token with every scope the APIs ask for, for a person's own requests
        (curl -H @file): the reference platform's, or a team's own."""
        path = self.workdir / "api-token"
        ((name, value),) = self.issuer.headers("you", sorted(self.api_scopes())).items()
        path.write_text(f"{name}: {value}\n")
        path.chmod(0o600)
        return path


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of an OpenAPI document."""
    return [op for path in document.get("paths", {}).values() for op in path.values()
            if isinstance(op, dict)]  # fmt: skip


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def _laps(timings: dict[str, float]) -> str:
    return ", ".join(f"{what} at {seconds:.1f} s" for what, seconds in timings.items())


def _seconds(duration: str) -> int:
    """A Prometheus duration of one unit ("5s", "1m") in seconds."""
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def _job(name: str, port: int, interval_s: int) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": f"{interval_s}s",
        "scrape_timeout": f"{interval_s}s",
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
    }


app = typer.Typer(add_completion=False)


@app.command()
def main(
    rate: Annotated[
        float, typer.Option(min=1, help="watch events per second posted to the API")
    ] = 20,
    interval: Annotated[str, typer.Option(help="Prometheus scrape and evaluation interval")] = "5s",
    duration: Annotated[
        float, typer.Option(min=0, help="stop after this many seconds (0: at Ctrl-C)")
    ] = 0,
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="your platform's catalog file, its package installed in .venv (default:"
            " $TIDE_CATALOG_FILE, else the reference OTT platform with its workload)",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """The whole platform on this machine, a steady workload and a live view; Ctrl-C stops it."""
    from tide_dev.local_view import LiveView  # noqa: PLC0415

    console = Console()
    catalog_file = (
        str(catalog.resolve())
        if catalog
        else os.environ.get("TIDE_CATALOG_FILE") or str(REFERENCE_CATALOG)
    )
    try:  # before any broker starts: a catalog that does not load is the whole error
        read_catalog(catalog_file)
    except CatalogFileError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(3) from None
    # `kill -USR1` prints every thread's stack: what a stop that does not end is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    began = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C, at any step
    # Ctrl-C itself, even when started with SIGINT ignored (a background job of a
    # non-interactive shell inherits that, and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    session = BrokerSession()
    workdir = Path(tempfile.mkdtemp(prefix="tide-local-"))
    stack: LocalStack | None = None
    failed = True
    try:
        with console.status("brokers: Kafka, RabbitMQ and PostgreSQL") as status:
            brokers = session.open()
            stack = LocalStack(
                session,
                brokers,
                workdir,
                catalog_file=catalog_file,
                catalog_suffix=os.environ.get("TIDE_CATALOG_SUFFIX", ""),
                interval=interval,
                rate=rate,
            )
            stack.timings["brokers"] = round(time.monotonic() - began, 1)
            stack.start(status.update, began=began)
        started_in = time.monotonic() - began
        assert stack.prometheus is not None
        console.print(
            f"live after {started_in:.1f} s ({_laps(stack.timings)}); "
            f"API {stack.api_url} (its credentials: curl -H @{stack.write_token()}), "
            f"Prometheus {stack.prometheus.url}, logs {stack.logs}; Ctrl-C stops everything",
            soft_wrap=True,
        )
        LiveView(stack, console).run(duration=duration, started_in=started_in)
        failed = False
    except (HarnessError, TimeoutError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        failed = False
    finally:
        took: dict[str, float] = {}
        with console.status("stopping everything make local started"):
            if stack is not None:
                took = stack.stop()
            began_closing = time.monotonic()
            session.close(keep_logs=failed)
            took["brokers"] = round(time.monotonic() - began_closing, 1)
        if failed:
            console.print(f"logs kept in {workdir} and {session.root}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            console.line()  # after the view's last frame
            console.print(
                "stopped: every process make local started has exited "
                f"({', '.join(f'{what} {seconds:.1f} s' for what, seconds in took.items())})"
            )


if __name__ == "__main__":
    app()
