"""Keeping the exactly-once marks bounded: each group's marks live as long as a record of
theirs can come back (Catalog.dedupe_retention_ms), then go.

Every consumer-group process prunes its own groups at start and every ten minutes.
Replicas doing it at once is harmless: a mark is deleted once, and the deletes go in
batches, each its own short transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import psycopg

from tide import metrics
from tide.errors import PLATFORM_ERRORS, pg_conninfo
from tide.store.processed import count_processed, prune_processed

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0


class MarkPruner:
    def __init__(
        self, dsn: str, keep_s: Mapping[str, float], *, every_s: float = PRUNE_EVERY_S
    ) -> None:
        self.dsn = dsn
        self.keep_s = dict(keep_s)  # group -> how long its marks are kept
        self.every_s = every_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            self.prune_once()
            self._stop.wait(self.every_s)

    def prune_once(self) -> dict[str, int]:
        """Prune every group once; returns the marks deleted per group. PostgreSQL being
        down only skips this round (the marks wait for the next)."""
        pruned: dict[str, int] = {}
        try:
            with psycopg.connect(pg_conninfo(self.dsn), autocommit=True) as db:
                for group, keep in self.keep_s.items():
                    pruned[group] = prune_processed(db, group, keep)
                    metrics.PROCESSED_MARKS_PRUNED.labels(group).inc(pruned[group])
                    metrics.PROCESSED_MARKS.labels(group).set(count_processed(db, group))
        except PLATFORM_ERRORS as exc:
            log.warning("pruning processed marks skipped this round: %s", exc)
        if any(pruned.values()):
            log.info("pruned processed marks past retention: %s", pruned)
        return pruned
