"""A retry waits its delay, and keeps it across a restart of the group (#15 deliverable 6).

The delay travels with the record (its not-before header on the retry topic), not in the
memory of the member that routed it: a member started after the failure still waits
until the record is due, and then handles it once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import unique
from tests.integration.test_consumer_runner import effects, rating, recording
from tests.runtime_fixtures import RunningGroup
from tide.errors import TransientError
from tide.events.envelope import CloudEvent
from tide.handlers import Handler
from tide.kafka.producer import EventPublisher
from tide.topology import Catalog, ConsumerGroup, RetryPolicy
from tide.waiting import wait_until

pytestmark = pytest.mark.timeout(180)
DELAY_S = 8


def test_a_retry_waits_its_delay_even_when_the_group_restarts_in_between(
    catalog: Catalog,
    publisher: EventPublisher,
    run_group: Callable[[ConsumerGroup, Handler], RunningGroup],
    database: str,
    effects_table: str,
) -> None:
    base = catalog.group(next(g.name for g in catalog.consumer_groups if "badges" in g.name))
    group = base.model_copy(update={"name": unique("g"), "retry": RetryPolicy(delays_s=(DELAY_S,))})
    flaky = rating(unique("flaky"))
    failed_at: list[float] = []
    handled_at: list[float] = []

    def fail_first(event: CloudEvent, attempt: int) -> None:
        if event.id != flaky.id:
            return
        if attempt == 1:
            failed_at.append(time.time())
            raise TransientError("dependency down")
        handled_at.append(time.time())

    handler, attempts = recording(fail_first)
    first = run_group(group, handler)
    publisher.publish(flaky)
    wait_until(lambda: bool(failed_at), timeout=60, what="the first, failing attempt")
    # The record is on its way to the retry topic; stop this member and start another.
    first.stop()
    run_group(group, handler)
    wait_until(
        lambda: flaky.id in effects(database, group.name),
        timeout=DELAY_S + 60,
        what="the retried event's effect",
    )
    waited = handled_at[0] - failed_at[0]
    assert waited >= DELAY_S - 0.5, f"retried after {waited:.1f} s, before its {DELAY_S} s delay"
    assert attempts[flaky.id] == 2
    assert effects(database, group.name)[flaky.id] == 1
