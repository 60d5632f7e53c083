"""Load on the API: watch events for a set of users at a steady rate, each answer recorded."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Self

import httpx


@dataclass
class LoadResult:
    """Every request the load made: which were accepted (and their event ids), how fast."""

    sent: Counter[str] = field(default_factory=Counter)
    accepted: dict[str, list[str]] = field(default_factory=dict)
    refused: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # (monotonic time of the answer, latency in ms) of every accepted request
    latencies: list[tuple[float, float]] = field(default_factory=list)

    @property
    def accepted_total(self) -> int:
        return sum(len(ids) for ids in self.accepted.values())

    @property
    def accepted_ids(self) -> list[str]:
        return [event_id for ids in self.accepted.values() for event_id in ids]

    def p99_ms(self, since: float = 0.0, until: float = float("inf")) -> float:
        """p99 latency of the requests answered in [since, until) (0 when there were none)."""
        window = [ms for at, ms in self.latencies if since <= at < until]
        if len(window) < 2:
            return window[0] if window else 0.0
        return statistics.quantiles(window, n=100, method="inclusive")[98]

    def refusals(self) -> int:
        return sum(self.refused.values()) + sum(self.errors.values())


class ApiLoad:
    """Posts `video.watch.completed` for `users` in turn at `rate` per second (open loop: a slow
    answer does not slow the load), from its own thread, until `stop()`."""

    accepted_status = 202

    def __init__(
        self,
        url: str,
        users: Sequence[str],
        videos: Sequence[str],
        *,
        rate: float = 30.0,
        concurrency: int = 64,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers` go with every request: the credentials of an API behind tide.auth."""
        self.base = url.rstrip("/")
        self.headers = dict(headers or {})
        self.url = self.base + "/v1/events"
        self.users = list(users)
        self.videos = list(videos)
        self.rate = rate
        self.concurrency = concurrency
        self.result = LoadResult(accepted={user: [] for user in users})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="api-load", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def accepted(self) -> int:
        return self.result.accepted_total

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.result

    def _serve(self) -> None:
        asyncio.run(self._drive())

    async def _drive(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        async with (
            httpx.AsyncClient(timeout=30, limits=limits, headers=self.headers) as client,
            asyncio.TaskGroup() as tg,
        ):
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            for n in itertools.count():
                if self._stop.is_set():
                    break
                user = self.users[n % len(self.users)]
                video = self.videos[n % len(self.videos)]
                await slots.acquire()
                tg.create_task(self._post(client, slots, user, video, n))
                next_at += interval
                # Pacing the open-loop load, not waiting on a condition.
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def request(self, user: str, video: str, n: int) -> tuple[str, dict[str, object]]:
        """The n-th request: where it is posted, and its body."""
        body: dict[str, object] = {
            "type": "video.watch.completed",
            "data": {
                "user_id": user,
                "video_id": video,
                "session_id": f"{user}-s{n}",
                "watched_s": 60,
                "finished": True,
            },
        }
        return self.url, body

    async def _post(
        self, client: httpx.AsyncClient, slots: asyncio.Semaphore, user: str, video: str, n: int
    ) -> None:
        url, body = self.request(user, video, n)
        started = time.monotonic()
        try:
            self.result.sent[user] += 1
            response = await client.post(url, json=body)
        except httpx.HTTPError as exc:
            self.result.errors[type(exc).__name__] += 1
            return
        finally:
            slots.release()
        answered = time.monotonic()
        if response.status_code == self.accepted_status:
            self.result.accepted[user].append(response.json()["id"])
            self.result.latencies.append((answered, (answered - started) * 1000))
        else:
            self.result.refused[response.status_code] += 1


class SubscriptionLoad(ApiLoad):
    """The subscription API's commands at `rate` per second: each user's subscriptions are
    started, renewed and cancelled in turn (`videos` name the plans)."""

    accepted_status = 200

    def request(self, user: str, video: str, n: int) -> tuple[str, dict[str, object]]:
        # Three requests per subscription, so its user and plan follow n // 3, not n.
        k = n // 3
        user, plan = self.users[k % len(self.users)], self.videos[k % len(self.videos)]
        step = ("start", "renew", "cancel")[n % 3]
        url = f"{self.base}/v1/subscriptions/{user}-sub{k}/{step}"
        return url, ({"user_id": user, "plan": plan} if step == "start" else {})
