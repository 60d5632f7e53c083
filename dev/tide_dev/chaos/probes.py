"""What an experiment looks at: group backlogs and members, the effects in PostgreSQL, and
the no-loss check that holds the events in Kafka against those effects."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tide.events.envelope import CloudEvent, EnvelopeError
from tide.kafka.processing import Record
from tide.kafka.transient import retrying
from tide.status import backlogs
from tide.topology import Catalog, ConsumerGroup
from tide.waiting import wait_until
from tide_dev.chaos.workload import LoadResult

WATCH_TYPE = "video.watch.completed"  # what the chaos load posts (tide_dev.chaos.workload)


def wait_drained(
    client: dict[str, Any], groups: Iterable[ConsumerGroup], *, timeout: float, what: str = ""
) -> float:
    """Wait until every one of `groups` has no backlog; returns the seconds it took.

    At the deadline the error names each group still behind, with its backlog and members.
    """
    wanted = list(groups)
    started = time.monotonic()
    last: dict[str, int] = {}

    def drained() -> bool:
        last.update(backlogs(client, wanted))
        return not any(last.values())

    try:
        wait_until(drained, timeout=timeout, interval=0.5, what=what or "every group drained")
    except TimeoutError as exc:
        behind = ", ".join(
            f"{g.name}: {last[g.name]} behind, {members(client, g)} member(s)"
            for g in wanted
            if last.get(g.name)
        )
        raise TimeoutError(f"{exc} ({behind})") from None
    return time.monotonic() - started


def members(client: dict[str, Any], group: ConsumerGroup) -> int:
    admin = AdminClient(client)
    described = retrying(
        lambda: admin.describe_consumer_groups([group.name])[group.name].result(timeout=10), 10
    )
    return len(described.members)


@dataclass(frozen=True)
class UserEffects:
    watched: int  # personalization: one per completed watch
    completions: int  # badges: one per finished watch
    notifications: int  # notification-worker: one job per recommendation


def effects(database: str, users: list[str]) -> dict[str, UserEffects]:
    with psycopg.connect(database) as conn:
        watched: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, watched FROM viewer_profiles WHERE user_id = ANY(%s)", (users,)
            ).fetchall()
        )
        completions: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, count FROM completions WHERE user_id = ANY(%s)", (users,)
            ).fetchall()
        )
        notifications: dict[str, int] = dict(
            conn.execute(
                "SELECT user_id, count(*) FROM notifications_sent WHERE user_id = ANY(%s)"
                " GROUP BY 1",
                (users,),
            ).fetchall()
        )
    return {
        user: UserEffects(
            int(watched.get(user, 0)),
            int(completions.get(user, 0)),
            int(notifications.get(user, 0)),
        )
        for user in users
    }


def processed(database: str, group: ConsumerGroup, event_ids: list[str]) -> int:
    """How many of `event_ids` the group has processed (the mark its effects commit with)."""
    with psycopg.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM processed_events WHERE consumer = %s AND event_id = ANY(%s)",
            (group.name, event_ids),
        ).fetchone()
    return int(row[0]) if row else 0


# The effects each watch event has, as (what a claim calls it, the UserEffects field).
_EFFECTS = (
    ("profile count", "watched"),
    ("badge completion", "completions"),
    ("notification", "notifications"),
)


@dataclass(frozen=True)
class Tally:
    """What the no-loss check found for a set of users, and the claims it makes of that."""

    accepted: frozenset[str]  # the ids the API answered 202 for
    refused: int  # requests refused or failed
    written: dict[str, frozenset[str]]  # per user: the ids of their watch events in Kafka
    effects: dict[str, UserEffects]  # per user: the effects in PostgreSQL
    processed: dict[str, int]  # per group reading the watch topic: ids in Kafka it marked

    @property
    def in_kafka(self) -> frozenset[str]:
        return frozenset().union(*self.written.values())

    @property
    def expected(self) -> dict[str, int]:
        """Per user: how many of each effect there must be (one per event in Kafka)."""
        return {user: len(ids) for user, ids in self.written.items()}

    @property
    def figures(self) -> dict[str, int]:
        return {
            "accepted": len(self.accepted),
            "refused_or_failed": self.refused,
            "in_kafka": len(self.in_kafka),
            "profiles": sum(e.watched for e in self.effects.values()),
            "completions": sum(e.completions for e in self.effects.values()),
            "notifications": sum(e.notifications for e in self.effects.values()),
        }

    def off(self, field: str) -> list[str]:
        """The users whose count of effect `field` (a UserEffects field) is not one per event."""
        expected = self.expected
        return [u for u, seen in self.effects.items() if getattr(seen, field) != expected[u]]

    @property
    def claims(self) -> list[tuple[bool, str]]:
        """Each claim of the check, and whether it held."""
        claims = [(self.accepted <= self.in_kafka, "every accepted (202) event is in Kafka")]
        for name, field in _EFFECTS:
            wrong = self.off(field)
            claims.append((not wrong, f"one {name} per event, for every user (off: {wrong[:3]})"))
        total = len(self.in_kafka)
        claims.extend(
            (done == total, f"{group} processed {done}/{total} events")
            for group, done in self.processed.items()
        )
        return claims

    @property
    def violations(self) -> list[str]:
        return [claim for holds, claim in self.claims if not holds]


@dataclass(frozen=True)
class Ledger:
    """Where the no-loss check looks, wherever the platform runs: Kafka for the events
    written, PostgreSQL for their effects; the groups are the catalog's."""

    catalog: Catalog
    client: dict[str, Any]
    database: str
    drain_timeout_s: float = 150.0

    @property
    def groups(self) -> list[ConsumerGroup]:
        return list(self.catalog.consumer_groups)

    @property
    def watch_topic(self) -> str:
        return str(self.catalog.event(WATCH_TYPE).topic)

    @property
    def readers(self) -> list[ConsumerGroup]:
        """The groups that read every watch event, so each marks every one processed."""
        return [g for g in self.groups if self.watch_topic in g.topics]

    def tally(self, users: list[str], *results: LoadResult) -> Tally:
        """Once every group has drained (and every notification job is delivered, or the
        drain timeout has passed): what the load of `results` for `users` left behind."""
        wait_drained(self.client, self.groups, timeout=self.drain_timeout_s)
        written = self.written(users)
        expected = {user: len(ids) for user, ids in written.items()}

        def settled() -> bool:
            seen = effects(self.database, users)
            return all(seen[u].notifications >= expected[u] for u in users)

        # Notification jobs travel on through RabbitMQ after the groups drain. A shortfall
        # is a broken claim of the tally, with numbers, not an error here.
        with contextlib.suppress(TimeoutError):
            wait_until(
                settled, timeout=self.drain_timeout_s, what="every notification job delivered"
            )
        seen = effects(self.database, users)
        ids = sorted(set().union(*written.values()))
        return Tally(
            accepted=frozenset(event_id for result in results for event_id in result.accepted_ids),
            refused=sum(result.refusals() for result in results),
            written=written,
            effects=seen,
            processed={g.name: processed(self.database, g, ids) for g in self.readers},
        )

    def written(self, users: list[str]) -> dict[str, frozenset[str]]:
        """The ids of the watch events of `users` that Kafka holds (what consumers must see).

        Read from the CloudEvents headers, not the value: on a deployment the API frames
        values for the schema registry, and the check needs no registry to count events.
        """
        topic = self.watch_topic
        consumer = Consumer(
            {
                **self.client,
                "group.id": f"tide-chaos-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        wanted = set(users)
        found: dict[str, set[str]] = {user: set() for user in users}
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            starts, ends = {}, {}
            for p in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high > low:
                    starts[p], ends[p] = low, high
            consumer.assign([TopicPartition(topic, p, low) for p, low in starts.items()])
            done: set[int] = set()
            deadline = time.monotonic() + 60
            while len(done) < len(ends) and time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=1):
                    if message.error() is not None:
                        continue
                    record = Record.of(message)
                    if record.offset + 1 >= ends[record.partition]:
                        done.add(record.partition)
                    if record.key is None:
                        continue
                    user = record.key.decode(errors="replace")
                    if user not in wanted:
                        continue  # another user's, or a poison record (keyed "poison")
                    try:
                        event = CloudEvent.from_kafka(record.headers, {})
                    except EnvelopeError:
                        continue  # not an event: it went to the DLQ, no effect expected
                    if event.type == WATCH_TYPE:
                        found[user].add(event.id)
        finally:
            consumer.close()
        return {user: frozenset(ids) for user, ids in found.items()}
