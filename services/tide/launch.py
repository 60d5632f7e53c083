"""Starting one catalog service as a process, wired only from TIDE_* settings and the catalog."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import assert_never

import uvicorn
from fastapi import FastAPI

from tide import heap, metrics
from tide.codecs.json_schema import EventCodec
from tide.handlers import AppContext, NotRunnableError, load_app, load_handler
from tide.health import HealthServer, PortInUseError, bind, metrics_apart, time_answers
from tide.kafka.consumer import ConsumerRunner
from tide.kafka.processing import RecordProcessor
from tide.kafka.producer import EventPublisher
from tide.liveness import Liveness
from tide.needs import Dependency, Needs, ProcessKind, kind_of, process_needs
from tide.rabbitmq.bus import (
    BlockingRabbitPublisher,
    QueueConsumer,
    QueueMissingError,
    unready_reason,
)
from tide.settings import Settings
from tide.sinks import EventRouter
from tide.store.retention import MarkPruner
from tide.topology import Catalog

# NotRunnableError lives with the loaders that raise it; `tide run` catches it from here.
__all__ = [
    "NotDrainedError",
    "NotRunnableError",
    "PortInUseError",
    "QueueMissingError",
    "RunnerDiedError",
    "check_needs",
    "run_service",
    "serve",
]

log = logging.getLogger(__name__)


class RunnerDiedError(RuntimeError):
    """A consumer group's loop ended with an error; the process exits so it starts afresh."""


class NotDrainedError(RuntimeError):
    """A process stopped without finishing what it had in hand; it exits 1."""


def run_service(name: str, settings: Settings, catalog: Catalog) -> None:
    """Run `name` until SIGTERM or SIGINT; returns after a graceful drain.

    Its needs (tide.needs) are checked first: the deployment renders its environment
    from the same needs, so a process the chart deploys has what this check asks for.
    """
    needs = check_needs(name, settings, catalog)
    kind = kind_of(catalog, name)
    if settings.parent_pid is not None:
        _exit_with_parent(settings.parent_pid)
    # Each failure series this service can write exists at 0 from the start, so a panel or
    # rule reads "no failures" rather than "no data" ("timeout": the usual reason).
    produced = set(catalog.service(name).produces)
    for event in catalog.events:
        if event.topic in produced:
            metrics.PUBLISH_FAILURES.labels(event.type, "timeout")
    heap.settle()  # everything is imported and the catalog loaded: none of it is garbage
    match kind:
        case ProcessKind.API:
            _run_api(name, settings, catalog)
        case ProcessKind.CONSUMER_GROUPS:
            _run_consumer_groups(name, settings, catalog, needs)
        case ProcessKind.QUEUE_WORKERS:
            asyncio.run(_run_queue_workers(name, settings, catalog))
        case unreachable:
            assert_never(unreachable)
    log.info("%s stopped cleanly", name)


def check_needs(name: str, settings: Settings, catalog: Catalog) -> Needs:
    """What `name` needs, once `settings` give it; MissingSettingError names each variable missing
    (exit 3)."""
    needs = process_needs(catalog, name)
    settings.require(*needs.required_settings)
    return needs


def serve(app: FastAPI, host: str, port: int) -> None:
    """How every HTTP service is served; raises NotDrainedError when its shutdown did not
    drain (the lifespan sets `app.state.drained`).

    uvloop and httptools are named, not left to uvicorn's "auto", so an image without
    them fails at start instead of running slower. uvicorn catches SIGTERM, drains the
    requests in flight and the lifespan, then raises the signal again once it has put
    back the handlers it found: with these in place, that second signal lands here
    instead of killing the process, so the exit status (0, or 1) tells whether it drained,
    as it does for every other runner.
    """
    sock = bind(host, port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(app, loop="uvloop", http="httptools", log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
    if not getattr(app.state, "drained", False):
        raise NotDrainedError("the HTTP server stopped before its shutdown drained")


def _run_api(name: str, settings: Settings, catalog: Catalog) -> None:
    service = catalog.service(name)
    if service.app is None:  # the catalog refuses this; a hand-built one may not
        raise NotRunnableError(f"service {name!r} has role api but names no app")
    factory = load_app(service.app)  # before the publisher: nothing to close if it fails
    publisher = EventPublisher(
        settings.kafka_client_config(),
        EventCodec(catalog, settings.schema_registry_url),
        timeout_s=settings.publish_timeout_s,
    )
    app = factory(AppContext(service, catalog, publisher, settings))
    time_answers(app)  # whatever the team's routes return or raise
    if settings.metrics_port:
        metrics_apart(app, settings.metrics_port)
    # uvicorn drains in-flight requests on SIGTERM, then the lifespan flushes the producer.
    serve(app, "0.0.0.0", settings.http_port)  # noqa: S104 - in a container


def _run_consumer_groups(name: str, settings: Settings, catalog: Catalog, needs: Needs) -> None:
    client = settings.kafka_client_config()
    codec = EventCodec(catalog, settings.schema_registry_url)
    kafka = EventPublisher(client, codec, timeout_s=settings.publish_timeout_s)
    rabbit = None
    if Dependency.RABBITMQ in needs.required:
        rabbit = BlockingRabbitPublisher(settings.rabbitmq_url.get_secret_value(), codec)
    router = EventRouter(codec, kafka, rabbit)
    dsn = settings.postgres_dsn.get_secret_value()
    runners: list[ConsumerRunner] = []
    liveness = Liveness()
    for group in catalog.groups_of(name):
        processor = RecordProcessor(
            group=group,
            handler=load_handler(group.handler),
            codec=codec,
            database=dsn,
            publisher=router,
            source=f"/{name}",
        )
        runners.append(
            ConsumerRunner(
                group,
                processor,
                client,
                timeout_s=settings.publish_timeout_s,
                heartbeat=liveness.heartbeat(f"group {group.name}"),
            )
        )
    died: list[str] = []

    def stop_all() -> None:
        for runner in runners:
            runner.stop()
        pruner.stop()

    def supervised(runner: ConsumerRunner) -> None:
        # A runner that raises ends the process (exit 1, the kubelet or `tide-dev run`
        # starts it again); its partitions go to the other members meanwhile.
        try:
            runner.run()
        except Exception as exc:
            log.exception("group %s died", runner.group.name)
            died.append(f"group {runner.group.name}: {exc!r}")
            stop_all()

    def wedged() -> str | None:
        # Not joined while Kafka answers our publisher: not an outage, a stuck client.
        stuck = [reason for r in runners if (reason := r.unjoined()) is not None]
        if stuck and kafka.unready_reason() is None:
            return "; ".join(stuck)
        return None

    liveness.add_check(wedged)
    pruner = MarkPruner(
        dsn, {g.name: catalog.dedupe_retention_ms(g) / 1000 for g in catalog.groups_of(name)}
    )
    pruning = threading.Thread(target=pruner.run, name="prune-marks", daemon=True)
    threads = [
        threading.Thread(target=supervised, args=(r,), name=f"group-{r.group.name}")
        for r in runners
    ]

    def unready() -> str | None:
        # Ready only when every broker this process writes to takes a connection.
        reason = kafka.unready_reason()
        if reason is None and rabbit is not None:
            reason = unready_reason(settings.rabbitmq_url.get_secret_value())
        return reason

    health = HealthServer(
        unready, settings.http_port, alive=liveness.problem, metrics_port=settings.metrics_port
    )

    _on_stop_signals(stop_all)
    health.start()
    pruning.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pruner.stop()
    pruning.join(timeout=10)
    health.stop()
    for runner in runners:
        runner.processor.close()
    kafka.close()
    if rabbit is not None:
        rabbit.close()
    if died:
        raise RunnerDiedError("; ".join(died))


async def _run_queue_workers(name: str, settings: Settings, catalog: Catalog) -> None:
    codec = EventCodec(catalog, settings.schema_registry_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    consumers = [
        QueueConsumer(
            worker,
            load_handler(worker.handler),
            codec,
            rabbitmq_url=settings.rabbitmq_url.get_secret_value(),
            postgres_dsn=settings.postgres_dsn.get_secret_value(),
            source=f"/{name}",
        )
        for worker in catalog.workers_of(name)
    ]
    url = settings.rabbitmq_url.get_secret_value()
    health = HealthServer(
        lambda: unready_reason(url), settings.http_port, metrics_port=settings.metrics_port
    )
    health.start()
    await asyncio.gather(*(c.run(stop) for c in consumers))
    health.stop()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """SIGTERM this process (a drain, like any stop) once `parent` is no longer its parent:
    a supervisor or test run killed without its cleanup leaves no service behind."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)  # a poll of the parent, not a synchronization
        log.warning("parent process %d is gone: draining", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _on_stop_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: draining", signum)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
