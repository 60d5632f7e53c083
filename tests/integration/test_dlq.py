"""Dead letters against a real broker: inspect them, fix the handler, redrive, each effect once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from tests.integration.test_consumer_runner import effects, fast_retries, rating, recording
from tests.runtime_fixtures import RunningGroup
from tide.cli import app
from tide.dlq import DeadLetterQueue
from tide.errors import PermanentError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler
from tide.kafka import failures
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev import Brokers

pytestmark = pytest.mark.timeout(180)


def test_fix_then_redrive_empties_the_dlq_and_every_effect_exists_once(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    broken = threading.Event()
    broken.set()

    def bug(event: CloudEvent, _attempt: int) -> None:
        if broken.is_set() and event.data["rating"] == 1:
            raise PermanentError("one-star ratings crash the ranking model")

    group = fast_retries(catalog)
    handler, _attempts = recording(bug)
    run_group(group, handler)
    bad = [rating(f"grumpy-{i}", 1) for i in range(6)]
    good = [rating(f"happy-{i}", 5) for i in range(6)]
    for event in bad + good:
        publisher.publish(event)
    dlq = DeadLetterQueue({"bootstrap.servers": brokers.kafka_bootstrap}, group)
    wait_until(lambda: dlq.depth() == 6, timeout=60, what="6 dead letters")
    wait_until(
        lambda: set(effects(database, group.name)) == {e.id for e in good},
        timeout=60,
        what="good ones",
    )

    shown = dlq.show(limit=10)
    assert len(shown) == 6
    assert {d.event_type for d in shown} == {"video.rated"}
    assert {d.reason for d in shown} == {"permanent"}
    assert {d.error for d in shown} == {"one-star ratings crash the ranking model"}
    assert dlq.redrive(dry_run=True).redriven == 6
    assert dlq.depth() == 6, "a dry run changes nothing"

    broken.clear()  # the fix is deployed
    # Interrupted after three records, then run again: nothing lost, nothing twice.
    first = dlq.redrive(limit=3)
    assert first.redriven == 3
    assert dlq.depth() == 3
    second = dlq.redrive()
    assert second.redriven == 3
    assert set(second.destinations) == {group.retry_topics[0]}
    assert dlq.depth() == 0
    wanted = {e.id for e in bad + good}
    wait_until(
        lambda: set(effects(database, group.name)) == wanted, timeout=60, what="redriven effects"
    )
    assert set(effects(database, group.name).values()) == {1}


def test_redriven_records_carry_a_redrive_count_and_keep_their_origin(
    brokers: Brokers,
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    effects_table: str,
) -> None:
    def always(event: CloudEvent, _attempt: int) -> None:
        raise PermanentError("still broken")

    group = fast_retries(catalog)
    handler, _ = recording(always)
    run_group(group, handler)
    publisher.publish(rating("stubborn", 2))
    dlq = DeadLetterQueue({"bootstrap.servers": brokers.kafka_bootstrap}, group)
    wait_until(lambda: dlq.depth() == 1, timeout=60, what="a dead letter")
    assert dlq.redrive().redriven == 1
    wait_until(lambda: dlq.depth() == 1, timeout=60, what="the record dead again")
    (again,) = dlq.show()
    assert again.headers[failures.REDRIVE_COUNT] == "1"
    assert again.headers[failures.ORIGINAL_TOPIC] == catalog.event("video.rated").topic
    assert again.headers[failures.ATTEMPT] == "1"


def test_cli_lists_shows_and_redrives_dead_letters(brokers: Brokers, catalog: Catalog) -> None:
    group = next(g for g in catalog.consumer_groups if g.name.startswith("badges"))
    suffix = group.name.removeprefix("badges-")
    env = {"TIDE_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap, "TIDE_CATALOG_SUFFIX": suffix}
    event = rating("cli-user", 1)
    dead = Producer({"bootstrap.servers": brokers.kafka_bootstrap})
    dead.produce(
        group.dlq_topic,
        key=b"cli-user",
        value=b'{"user_id":"cli-user","video_id":"v1","rating":1}',
        headers=[
            *event.kafka_headers(),
            (failures.DEAD_LETTER_REASON, b"permanent"),
            (failures.ERROR_MESSAGE, b"boom"),
            (failures.ORIGINAL_TOPIC, catalog.event("video.rated").topic.encode()),  # type: ignore[union-attr]
        ],
    )
    assert dead.flush(10) == 0
    runner = CliRunner()

    listed = runner.invoke(app, ["dlq", "ls", "--group", group.name, "-o", "json"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert (row["depth"], row["last_reason"], row["last_error"]) == (1, "permanent", "boom")

    shown = runner.invoke(
        app,
        ["dlq", "show", "-g", group.name, "--filter", "type=video.rated", "-o", "json"],
        env=env,
    )
    (letter,) = json.loads(shown.stdout)
    assert letter["id"] == event.id

    dry = runner.invoke(
        app, ["dlq", "redrive", "-g", group.name, "--dry-run", "-o", "json"], env=env
    )
    assert json.loads(dry.stdout)["remaining"] == 1
    done = runner.invoke(app, ["dlq", "redrive", "-g", group.name, "-o", "json"], env=env)
    report = json.loads(done.stdout)
    assert (report["redriven"], report["remaining"]) == (1, 0)
    assert report["destinations"] == {group.retry_topics[0]: 1}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dlq", "show", "-g", "no-such-group"], "unknown group 'no-such-group'; known:"),
        (["dlq", "show", "-g", "badges", "--filter", "kind=x"], "--filter must look like type="),
        (["dlq", "redrive", "-g", "badges", "--to", "elsewhere"], "--to must be retry or original"),
    ],
)
def test_cli_refuses_bad_dlq_arguments_with_exit_code_2(
    brokers: Brokers, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(app, args, env={"TIDE_KAFKA_BOOTSTRAP": brokers.kafka_bootstrap})
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
