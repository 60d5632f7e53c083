"""Idempotent requests: a client's `Idempotency-Key` (the IETF httpapi draft's header), or
the event id the client chose itself (the body's `id`).

The key and the request's content decide the event id (a UUIDv5); a client's own id is
the event id. Either way a retry publishes the same id and every consumer's exactly-once
marks give it no second effect - also after a 503 whose first attempt Kafka did take,
and on any replica. The first answer
is kept for a day on the replica that gave it, which answers a retry with it again
(`Idempotent-Replayed: true`) and refuses the key or id reused for different content
(422).
The marks outlive that day (Catalog.dedupe_retention_ms): a retry later than the day,
or on another replica, is answered 202 again but still has one effect.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from typing import Any

import orjson
from cachetools import TTLCache

WINDOW_S = 24 * 3600
MAX_KEYS = 100_000  # per replica; the oldest go first beyond it
HEADER = "idempotency-key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces
CLIENT_ID = "id:"  # a client's own event ids share the answers, apart from header keys
_NAMESPACE = uuid.UUID("0f3f5a8e-6c2b-4b8e-9a43-2d1f7c6e5b10")


class IdempotencyKeyError(ValueError):
    """An Idempotency-Key that is malformed (400) or reused for another request (422)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Replays:
    def __init__(self, *, window_s: float = WINDOW_S, size: int = MAX_KEYS) -> None:
        self._answers: TTLCache[str, tuple[str, dict[str, Any]]] = TTLCache(size, window_s)
        self._lock = threading.Lock()

    @staticmethod
    def checked(key: str) -> str:
        if not _KEY.fullmatch(key):
            raise IdempotencyKeyError(400, "Idempotency-Key: 1 to 255 printable ASCII characters")
        return key

    @staticmethod
    def fingerprint(payload: Any) -> str:
        """The request's content, whatever its key order or whitespace."""
        return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()

    @staticmethod
    def event_id(key: str, fingerprint: str, *, caller: str | None = None) -> str:
        """The event id of a header key's request: the caller's own, when there is one."""
        keyed = key if caller is None else f"{caller}\n{key}"
        return str(uuid.uuid5(_NAMESPACE, f"{keyed}\n{fingerprint}"))

    def first_answer(
        self,
        key: str,
        fingerprint: str,
        *,
        name: str = "Idempotency-Key",
        scope: str | None = None,
    ) -> dict[str, Any] | None:
        with self._lock:
            kept = self._answers.get(_scoped(key, scope))
        if kept is None:
            return None
        if kept[0] != fingerprint:
            shown = key.removeprefix(CLIENT_ID)
            raise IdempotencyKeyError(422, f"{name} {shown!r} was used for a different request")
        return kept[1]

    def remember(
        self, key: str, fingerprint: str, answer: dict[str, Any], *, scope: str | None = None
    ) -> None:
        with self._lock:
            self._answers[_scoped(key, scope)] = (fingerprint, answer)


def header_scope(caller: str | None) -> str:
    """Where a caller's header keys are kept: apart from every other caller's, and from
    the clients' own event ids (a header key may itself read `id:...`). A client's own
    event id has no scope: it is the event's id for every consumer."""
    return f"header:{caller or ''}"


def _scoped(key: str, scope: str | None) -> str:
    return key if scope is None else f"{scope}\n{key}"
