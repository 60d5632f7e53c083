"""The garbage collector's settings for a service process, set once at start.

CPython's cyclic collector runs after every 700 new container objects and, now and then,
walks every tracked object. A service has hundreds of thousands of them from its imports
alone (FastAPI, pydantic, jsonschema), none of them ever garbage, and it allocates a few
per event (the envelope, its headers, a future). Profiled (bench/): at the default
threshold the collector took about two thirds of encoding an event and waiting on its
future. So: what exists once the service is set up is frozen out of every collection,
and the youngest generation is collected after more allocations. Reference counting still
frees almost everything at once; only cycles wait a little longer.
"""

from __future__ import annotations

import gc

# New container objects before a young collection (CPython's default: 700). The older
# generations keep their defaults: each is collected every 10th time the one below is.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what the process holds now and collect less often from here on."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
