"""A service freezes what it holds at start and collects its young objects less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tide import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_the_startup_objects_and_raises_the_young_threshold() -> None:
    held = [["made at start"]]  # a container the collector tracks
    heap.settle()
    assert gc.get_freeze_count() > 0
    # Frozen objects are in no generation: no collection walks them again.
    assert not any(o is held for o in gc.get_objects())
    young, middle, old = gc.get_threshold()
    assert young == heap.YOUNG_THRESHOLD
    assert (middle, old) == (10, 10)
