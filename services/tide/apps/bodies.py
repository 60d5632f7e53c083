"""Reading a JSON request body at the edge, refusing what the platform should not take.

Only JSON media types (415 otherwise); the size bounded while the body streams, not
after it was buffered whole (413); a body that stops arriving is given up after a read
timeout (408); malformed JSON or a key given twice is 400 (the last one used to win).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from fastapi import Request

# A client gets this long to send its whole body; a stalled one no longer holds a worker.
READ_TIMEOUT_S = 10.0


class BodyRefusedError(Exception):
    """A request body the API will not take: its status, error and detail."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request, max_bytes: int, *, timeout_s: float = READ_TIMEOUT_S) -> Any:
    """The parsed body; raises BodyRefusedError naming why it is refused."""
    content_type = request.headers.get("content-type")
    if not _is_json(content_type):
        raise BodyRefusedError(
            415, "unsupported media type", f"send application/json, not {content_type or 'none'}"
        )
    too_large = BodyRefusedError(413, "body too large", f"at most {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefusedError(
            408, "request timeout", f"the body did not arrive within {timeout_s:.0f} s"
        ) from None
    body = b"".join(chunks)
    try:
        payload = orjson.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BodyRefusedError(400, "malformed JSON", str(exc)) from None
    duplicate = _duplicate_key(body)
    if duplicate is not None:
        raise BodyRefusedError(400, "malformed JSON", f"key {duplicate!r} given twice")
    return payload


def _duplicate_key(body: bytes) -> str | None:
    """The first key an object of `body` (valid JSON) gives twice, or None. orjson keeps
    the last silently; the stdlib parser hands each object's pairs to a hook."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        if len(set(keys)) != len(keys) and not found:
            found.append(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)
    return found[0] if found else None
