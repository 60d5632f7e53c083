"""Creating catalog topics with the admin API (local runs; on Kubernetes KafkaTopic does it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tide.topology import Topic
from tide.waiting import wait_until


def ensure_topics(
    client: dict[str, Any], topics: Iterable[Topic], *, replication_factor: int = 1
) -> list[str]:
    """Create those of `topics` that do not exist; return the names created.

    Waits until the broker a client asks knows every topic: created on the
    controller is not yet in every broker's metadata.
    """
    admin = AdminClient(client)
    wanted = list(topics)
    existing = set(admin.list_topics(timeout=15).topics)
    missing = [t for t in wanted if t.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(t.name, t.partitions, replication_factor, config=t.config())
                for t in missing
            ],
            operation_timeout=30,
        )
        for future in futures.values():
            future.result(timeout=60)
    names = {t.name for t in wanted}
    wait_until(
        lambda: names <= set(admin.list_topics(timeout=10).topics),
        timeout=30,
        what=f"{len(names)} topics in the broker's metadata",
    )
    return [t.name for t in missing]
