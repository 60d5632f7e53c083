"""Waiting on a condition with a deadline: how tests, harness and chaos experiments synchronise."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Awaitable, Callable


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` at the deadline.

    `alive` returns a reason when the thing waited on has died, so a crash is
    reported at once instead of after the whole deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None and (dead := alive()) is not None:
            raise RuntimeError(dead)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], Awaitable[bool]],
    *,
    deadline_s: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """The asyncio twin of `wait_until`: await `condition` until it holds or the deadline passes."""
    try:
        async with asyncio.timeout(deadline_s):
            # Polling a broker's state has no event to await; the deadline bounds it.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(interval)
    except TimeoutError:
        raise TimeoutError(f"{what} did not happen within {deadline_s:.0f}s") from None


def until_terminated() -> None:
    """Block the main thread until SIGTERM or Ctrl-C: a foreground server's life."""
    stop = threading.Event()
    # Both set here: a process started with SIGINT ignored would otherwise keep ignoring it.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
