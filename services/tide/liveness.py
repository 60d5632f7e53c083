"""Whether a process's background loops are still going round: what /healthz answers.

Each loop (a consumer group's poll loop, the outbox relay, a projection) holds a
Heartbeat and beats once per round. A loop that has not beaten within its bound is stuck
(a call that never returns), and one that ended with an error is dead: either makes
/healthz answer 503 with the reason, so the kubelet restarts the container and the
reason is in its events. A platform outage is neither: the loops keep going round
while they wait, so liveness stays ok and only readiness says what is down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# A round of a consumer loop is one poll (at most 0.5 s) plus one batch, whose every
# broker and database call has its own timeout (30 s at most); four of those is stuck.
LOOP_BOUND_S = 120.0


class Heartbeat:
    def __init__(self, name: str, bound_s: float) -> None:
        self.name = name
        self.bound_s = bound_s
        self._last = time.monotonic()
        self._failure: str | None = None
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            self._last = time.monotonic()
            self._failure = None

    def fail(self, reason: str) -> None:
        with self._lock:
            self._failure = reason

    def problem(self) -> str | None:
        with self._lock:
            if self._failure is not None:
                return f"{self.name}: {self._failure}"
            quiet = time.monotonic() - self._last
        if quiet > self.bound_s:
            return f"{self.name}: no progress for {quiet:.0f} s (bound {self.bound_s:.0f} s)"
        return None


class Liveness:
    """The heartbeats of one process, and extra checks (a wedged consumer group)."""

    def __init__(self) -> None:
        self._hearts: list[Heartbeat] = []
        self._checks: list[Callable[[], str | None]] = []

    def heartbeat(self, name: str, bound_s: float = LOOP_BOUND_S) -> Heartbeat:
        heart = Heartbeat(name, bound_s)
        self._hearts.append(heart)
        return heart

    def add_check(self, check: Callable[[], str | None]) -> None:
        self._checks.append(check)

    def problem(self) -> str | None:
        """None when every loop is going round; else each stuck or dead loop, with why."""
        found = [p for h in self._hearts if (p := h.problem()) is not None]
        found += [p for check in self._checks if (p := check()) is not None]
        return "; ".join(found) or None


async def supervised(
    heart: Heartbeat,
    loop: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    first_backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
) -> None:
    """Run `loop()` until `stop`; when it raises, log it, fail `heart` with the reason
    and start it again after a backoff (doubling up to `max_backoff_s`)."""
    backoff = first_backoff_s
    while not stop.is_set():
        try:
            await loop()
            return
        except Exception as exc:  # whatever ended it, it is reported and started again
            log.exception("%s died; restarting in %.0f s", heart.name, backoff)
            heart.fail(f"died: {exc!r}; restarting")
        try:
            await asyncio.wait_for(stop.wait(), backoff)
        except TimeoutError:
            backoff = min(backoff * 2, max_backoff_s)
