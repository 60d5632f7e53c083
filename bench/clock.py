"""How a consumer is timed: from its first record to its last, so its group join (which a
fresh group pays on every run, whoever the consumer is) stays out of its rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """Counts handled records; knows the rate from the first to the last and says when done."""

    def __init__(self, target: int, done: Callable[[], None]) -> None:
        self.target = target
        self.done = done
        self.count = 0
        self.first = self.last = 0.0

    def tick(self) -> None:
        self.count += 1
        if self.count == 1:
            self.first = time.perf_counter()
        if self.count == self.target:
            self.last = time.perf_counter()
            self.done()

    @property
    def rate(self) -> float:
        if self.count < self.target:
            raise RuntimeError(f"only {self.count} of {self.target} records were consumed")
        return (self.target - 1) / (self.last - self.first)
