"""The local chaos experiments. Each one: steady state, one fault under load, observation,
then the no-loss check (every accepted event's effect exists exactly once)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka import Producer

from tide.codecs.json_schema import EventCodec
from tide.dlq import DeadLetterQueue
from tide.events.envelope import CloudEvent
from tide.kafka.producer import EventPublisher
from tide.status import backlogs
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev.chaos.control import CONTROL_URL_VARIABLE, BrokerControl
from tide_dev.chaos.probes import WATCH_TYPE, Ledger, members, wait_drained
from tide_dev.chaos.processes import LocalPlatform
from tide_dev.chaos.report import Report
from tide_dev.chaos.workload import ApiLoad, LoadResult

# What `tide run` starts for the experiments: badges twice, so one member can be frozen.
SERVICES = (
    "video-service",
    "recommendation",
    "personalization",
    "analytics",
    "badges",
    "badges",
    "notification-dispatch",
    "notification-worker",
)
_Headers = list[tuple[str, str | bytes | None]]


@dataclass
class Chaos:
    """Everything an experiment acts on and looks at."""

    platform: LocalPlatform
    catalog: Catalog
    client: dict[str, Any]
    database: str
    control: BrokerControl | None = None
    rate: float = 25.0  # API requests per second during an experiment
    p99_bound_ms: float = 500.0  # the steady state: accepted with p99 under this
    drain_timeout_s: float = 150.0
    videos: list[str] = field(default_factory=list)

    def group(self, service: str) -> ConsumerGroup:
        (group,) = self.catalog.groups_of(service)
        return group

    @property
    def groups(self) -> list[ConsumerGroup]:
        return list(self.catalog.consumer_groups)

    @property
    def ledger(self) -> Ledger:
        """Where the no-loss check looks: the same Kafka, database and catalog."""
        return Ledger(self.catalog, self.client, self.database, self.drain_timeout_s)

    def others(self, *services: str) -> list[ConsumerGroup]:
        return [g for g in self.groups if g.service not in services]

    @property
    def api(self) -> str:
        return self.platform.of("video-service")[0].url

    def users(self, experiment: str, n: int = 8) -> list[str]:
        token = uuid.uuid4().hex[:6]
        return [f"chaos-{experiment}-{token}-{i}" for i in range(n)]

    def load(self, users: list[str]) -> ApiLoad:
        headers = self.platform.credentials("tide-chaos")
        return ApiLoad(self.api, users, self.videos, rate=self.rate, headers=headers).start()

    def run_for(self, load: ApiLoad, seconds: float) -> None:
        """Let the load run until it has been accepted `seconds` worth of requests more."""
        target = load.accepted() + int(self.rate * seconds)
        wait_until(
            lambda: load.accepted() >= target,
            timeout=seconds * 6 + 30,
            what=f"{target} events accepted by the API",
        )


def start_platform(chaos: Chaos) -> None:
    """Start every service and give recommendation a catalogue, so each watch makes a job."""
    for service in SERVICES:
        chaos.platform.start(service)
    chaos.videos = catalogue(chaos.ledger)


def catalogue(ledger: Ledger, *, timeout: float = 60) -> list[str]:
    """Publish three videos of one genre and wait until recommendation has them: from then on
    a watch of any of them makes a recommendation, hence a notification job. Returns their ids."""
    token = uuid.uuid4().hex[:6]
    videos = [f"chaos-{token}-v{i}" for i in range(3)]
    publisher = EventPublisher(ledger.client, EventCodec(ledger.catalog))
    try:
        for video in videos:
            publisher.publish(
                CloudEvent(
                    type="content.published",
                    source="/content",
                    data={"video_id": video, "title": video, "genres": ["chaos"]},
                )
            )
    finally:
        publisher.close()
    wait_until(
        lambda: _catalogued(ledger.database, videos),
        timeout=timeout,
        what="the chaos videos in recommendation's catalogue",
    )
    return videos


def _catalogued(database: str, videos: list[str]) -> bool:
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM content_catalog WHERE video_id = ANY(%s)", (videos,)
        ).fetchone()
    return row is not None and row[0] == len(videos)


def steady_state(chaos: Chaos, report: Report, users: list[str], seconds: float = 4) -> LoadResult:
    """The API accepts every event with p99 under the bound, and every group's lag drains."""
    load = chaos.load(users)
    try:
        chaos.run_for(load, seconds)
    finally:
        result = load.stop()
    p99 = result.p99_ms()
    report.observe(steady_p99_ms=p99, steady_refused=result.refusals())
    report.expect(result.refusals() == 0, "steady state: the API accepts every event")
    report.expect(p99 < chaos.p99_bound_ms, f"steady state: p99 < {chaos.p99_bound_ms:.0f} ms")
    drained = wait_drained(chaos.client, chaos.groups, timeout=chaos.drain_timeout_s)
    report.observe(steady_drain_s=drained)
    return result


def no_loss(chaos: Chaos, report: Report, users: list[str], *results: LoadResult) -> None:
    """Every accepted event is in Kafka, and each event in Kafka has exactly one effect in
    each group that acts on it: a profile count, a completion, a delivered notification."""
    tally = chaos.ledger.tally(users, *results)
    report.observe(**tally.figures)
    for holds, claim in tally.claims:
        report.expect(holds, claim)


@dataclass(frozen=True)
class Window:
    """The load that ran through a fault, and when the fault began and the load ended."""

    result: LoadResult
    began: float
    until: float

    @property
    def p99_ms(self) -> float:
        return self.result.p99_ms(self.began, self.until)


def _fault_under_load(
    chaos: Chaos, users: list[str], fault: Callable[[ApiLoad], None], *, after_s: float
) -> Window:
    """Two seconds of load, then `fault(load)`, then `after_s` more seconds of load."""
    load = chaos.load(users)
    try:
        chaos.run_for(load, 2)
        began = time.monotonic()
        fault(load)
        chaos.run_for(load, after_s)
        until = time.monotonic()
    finally:
        result = load.stop()
    return Window(result, began, until)


def _api_accepted_all(report: Report, window: Window, p99_key: str, claim: str) -> None:
    report.observe(**{p99_key: window.p99_ms}, refused=window.result.refusals())
    report.expect(window.result.refusals() == 0, claim)


def kill_group(chaos: Chaos) -> Report:
    victim = "personalization"
    report = Report(
        "kill-group",
        f"SIGKILL of every {victim} process under load: the API and the other groups are "
        f"unaffected; restarted, {victim} drains its lag and every event counts exactly once",
    )
    users = chaos.users("kill")
    steady = steady_state(chaos, report, users)

    def kill(_load: ApiLoad) -> None:
        killed = chaos.platform.kill(victim)
        report.act(f"SIGKILL {killed} {victim} process(es) with {chaos.rate:.0f} req/s on the API")

    window = _fault_under_load(chaos, users, kill, after_s=5)
    _api_accepted_all(
        report, window, "p99_ms_while_down", "the API accepted every event while a group was down"
    )
    report.expect(window.p99_ms < chaos.p99_bound_ms, "API p99 within the bound")
    others = chaos.others(victim)
    report.observe(others_drain_s=wait_drained(chaos.client, others, timeout=chaos.drain_timeout_s))
    stalled = backlogs(chaos.client, [chaos.group(victim)])[chaos.group(victim).name]
    report.observe(victim_lag_while_down=stalled)
    report.expect(stalled > 0, f"{victim}'s lag built up while it was down")
    restarted = time.monotonic()
    chaos.platform.start(victim)
    report.act(f"restarted {victim}")
    wait_drained(chaos.client, [chaos.group(victim)], timeout=chaos.drain_timeout_s)
    report.observe(victim_catch_up_s=time.monotonic() - restarted)
    no_loss(chaos, report, users, steady, window.result)
    return report


def freeze_consumer(chaos: Chaos) -> Report:
    victim = "badges"
    group = chaos.group(victim)
    report = Report(
        "freeze-consumer",
        f"one of two {victim} processes frozen (SIGSTOP) past the session timeout: the group "
        "rebalances to the other member and goes on; resumed, it rejoins; nothing is lost",
    )
    users = chaos.users("freeze")
    steady = steady_state(chaos, report, users)
    frozen = chaos.platform.of(victim)[0]

    def freeze_and_thaw(load: ApiLoad) -> None:
        frozen.popen.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        report.act(f"SIGSTOP {victim} pid {frozen.pid} under load")
        wait_until(lambda: members(chaos.client, group) == 1, timeout=60, what="a rebalance")
        report.observe(rebalanced_after_s=time.monotonic() - stopped)
        chaos.run_for(load, 3)
        frozen.popen.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        report.act(f"SIGCONT after {resumed - stopped:.0f} s")
        wait_until(lambda: members(chaos.client, group) == 2, timeout=60, what="the rejoin")
        report.observe(rejoined_after_s=time.monotonic() - resumed)

    window = _fault_under_load(chaos, users, freeze_and_thaw, after_s=2)
    report.expect(frozen.exit_reason() is None, "the frozen process survived its freeze")
    no_loss(chaos, report, users, steady, window.result)
    return report


def stop_rabbitmq(chaos: Chaos) -> Report:
    report = Report(
        "stop-rabbitmq",
        "with RabbitMQ stopped the API and every Kafka group carry on; notification jobs wait "
        "in Kafka and, once RabbitMQ is back, each is delivered exactly once",
    )
    control = _needs_control(chaos)
    users = chaos.users("rabbit")
    steady = steady_state(chaos, report, users)

    def stop(_load: ApiLoad) -> None:
        control("rabbitmq", "stop")
        report.act("stopped RabbitMQ under load")

    window = _fault_under_load(chaos, users, stop, after_s=5)
    _api_accepted_all(
        report, window, "p99_ms_while_down", "the API accepted every event without RabbitMQ"
    )
    kafka_only = chaos.others("notification-dispatch")
    report.observe(
        kafka_groups_drain_s=wait_drained(chaos.client, kafka_only, timeout=chaos.drain_timeout_s)
    )
    waiting = backlogs(chaos.client, [chaos.group("notification-dispatch")])
    report.observe(dispatch_lag_while_down=sum(waiting.values()))
    # The fault had its effect: without RabbitMQ the dispatch group cannot hand jobs on,
    # so they wait in Kafka. An experiment that saw no backlog tested nothing.
    report.expect(sum(waiting.values()) > 0, "notification jobs waited in Kafka while it was down")
    restarted = time.monotonic()
    control("rabbitmq", "start")
    report.act("started RabbitMQ again")
    no_loss(chaos, report, users, steady, window.result)
    report.observe(jobs_delivered_after_s=time.monotonic() - restarted)
    return report


def restart_kafka(chaos: Chaos) -> Report:
    report = Report(
        "restart-kafka",
        "Kafka down under load for longer than the consumers' session timeout, then back: "
        "no accepted event is lost and none has a double effect; the API refuses (503) only "
        "what Kafka could not confirm, and every group rejoins and catches up",
    )
    control = _needs_control(chaos)
    users = chaos.users("kafka")
    steady = steady_state(chaos, report, users)

    def outage(load: ApiLoad) -> None:
        began = time.monotonic()
        control("kafka", "stop")
        # Down until the API has refused some events: its publish timeout (10 s) has passed,
        # and with it the consumers' session timeout (10 s), so every group must rejoin.
        wait_until(lambda: load.result.refused[503] >= 3, timeout=90, what="the API refusing (503)")
        control("kafka", "start")
        down = time.monotonic() - began
        report.act(f"stopped the Kafka broker under load, started it again after {down:.0f} s")

    window = _fault_under_load(chaos, users, outage, after_s=3)
    result = window.result
    report.observe(
        p99_ms_across_outage=window.p99_ms,
        refused_by_status=dict(result.refused),
        errors=dict(result.errors),
    )
    report.expect(set(result.refused) <= {503}, "the API refused only with 503")
    report.expect(not result.errors, "every request got an answer (202 or 503)")
    no_loss(chaos, report, users, steady, result)
    return report


def poison_storm(chaos: Chaos, count: int = 600) -> Report:
    topic = str(chaos.catalog.event(WATCH_TYPE).topic)
    readers = [g for g in chaos.groups if topic in g.topics]
    report = Report(
        "poison-storm",
        f"{count} poison records on {topic}: each group that reads it dead-letters every one "
        "at once, keeps up with the valid load, and the API is unaffected",
    )
    users = chaos.users("poison")
    steady = steady_state(chaos, report, users)
    queues = {g.name: DeadLetterQueue(chaos.client, g) for g in readers}
    before = {name: dlq.depth() for name, dlq in queues.items()}

    def storm(_load: ApiLoad) -> None:
        produce_poison(chaos.client, chaos.catalog, topic, count)
        report.act(f"produced {count} poison records (bad JSON, invalid data, unknown type)")

    window = _fault_under_load(chaos, users, storm, after_s=3)
    _api_accepted_all(report, window, "p99_ms_during_storm", "the API accepted every valid event")
    wait_drained(chaos.client, readers, timeout=chaos.drain_timeout_s)
    report.observe(readers_drained_after_storm_s=time.monotonic() - window.began)
    added = {name: dlq.depth() - before[name] for name, dlq in queues.items()}
    report.observe(dead_lettered=added)
    report.expect(set(added.values()) == {count}, f"each reader dead-lettered all {count}")
    no_loss(chaos, report, users, steady, window.result)
    return report


def produce_poison(client: dict[str, Any], catalog: Catalog, topic: str, count: int) -> None:
    """`count` records on `topic` that no handler can take, in turn: not JSON, schema-invalid
    data, an unknown type. Each reader dead-letters every one."""
    codec = EventCodec(catalog)
    template = codec.encode(
        CloudEvent(
            type=WATCH_TYPE,
            source="/chaos",
            data={
                "user_id": "poison",
                "video_id": "v",
                "session_id": "s",
                "watched_s": 1,
                "finished": True,
            },
        )
    )
    valid: _Headers = list(template.headers)
    unknown: _Headers = [(k, b"video.teleported" if k == "ce_type" else v) for k, v in valid]
    poisons: list[tuple[bytes, _Headers]] = [
        (b'{"user_id": "poison", "video_id": ', valid),  # not JSON
        (b'{"user_id": "poison", "watched_s": "long"}', valid),  # schema-invalid
        (template.value, unknown),  # unknown type
    ]
    producer = Producer({**client, "linger.ms": 5})
    for n in range(count):
        value, headers = poisons[n % len(poisons)]
        producer.produce(topic, key=b"poison", value=value, headers=headers)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} poison records were not acknowledged")


def _needs_control(chaos: Chaos) -> BrokerControl:
    if chaos.control is None:
        raise RuntimeError(
            "this experiment stops a broker, so it needs broker control: run the brokers "
            f"with `make brokers` (it sets {CONTROL_URL_VARIABLE}) or use the test suite"
        )
    return chaos.control


EXPERIMENTS: dict[str, Callable[[Chaos], Report]] = {
    "kill-group": kill_group,
    "freeze-consumer": freeze_consumer,
    "stop-rabbitmq": stop_rabbitmq,
    "restart-kafka": restart_kafka,
    "poison-storm": poison_storm,
}
