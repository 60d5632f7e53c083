"""Reading a JSON request body at the edge, refusing what the platform should not take.

Only JSON media types (415 otherwise); the size bounded while the body streams, not
after it was buffered whole (413); a body that stops arriving is given up after a read
timeout (408); malformed JSON, a key given twice or nesting deeper than MAX_DEPTH is 400
(the last key used to win).
"""

from __future__ import annotations

import asyncio
import json
import math
import re

# Public in the stdlib since Python 2.6, but not in typeshed's stubs.
from json.decoder import JSONArray, JSONObject, scanstring  # type: ignore[attr-defined]
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any

from fastapi import Request

# A client gets this long to send its whole body; a stalled one no longer holds a worker.
READ_TIMEOUT_S = 10.0
# Arrays and objects nested deeper than this are refused. No event schema comes near it,
# and the parser recurses about three Python frames a level: far inside the interpreter's
# recursion limit, which a 1,000-level body inside 64 KiB used to hit (a 500).
MAX_DEPTH = 64
# orjson kept integers within 64 bits and made longer ones floats; the idempotency
# fingerprint (orjson.dumps) cannot encode a longer int.
_LONGEST_INT = 18
_SURROGATE = re.compile("[\ud800-\udfff]")


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
    return parse_json(b"".join(chunks))


def parse_json(body: bytes) -> Any:
    """`body` parsed in one pass that also refuses a key given twice and nesting deeper
    than MAX_DEPTH; raises BodyRefusedError (400) naming the problem.

    The stdlib's pure-Python scanner, with its array and object parsers wrapped to count
    the depth: the C scanner and orjson take no depth limit of ours, and orjson cannot see
    a duplicate key at all (it keeps the last one). What orjson refused is still refused:
    NaN and Infinity, numbers too large for a double, lone surrogates."""
    try:
        return _Parser().decode(body.decode())
    except BodyRefusedError:
        raise
    except UnicodeDecodeError as exc:
        raise BodyRefusedError(400, "malformed JSON", f"not UTF-8: {exc.reason}") from None
    except ValueError as exc:  # JSONDecodeError is one
        raise BodyRefusedError(400, "malformed JSON", str(exc) or "no JSON value") from None


class _Parser(json.JSONDecoder):
    """One body's parse: the depth it is at is state, so a parser serves one call."""

    def __init__(self) -> None:
        super().__init__(
            object_pairs_hook=_unique_keys,
            parse_float=_finite,
            parse_int=_integer,
            parse_constant=_no_constant,
        )
        self.depth = 0
        self.parse_object = self._nested(JSONObject)
        self.parse_array = self._nested(JSONArray)
        self.parse_string = self._checked_string
        self.scan_once = py_make_scanner(self)

    def _nested(self, parse: Any) -> Any:
        def nested(s_and_end: tuple[str, int], *args: Any) -> Any:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise BodyRefusedError(
                    400,
                    "nested too deep",
                    f"arrays and objects nested deeper than {MAX_DEPTH} levels"
                    f" (at char {s_and_end[1] - 1})",
                )
            try:
                return parse(s_and_end, *args)
            finally:
                self.depth -= 1

        return nested

    @staticmethod
    def _checked_string(s: str, end: int, strict: bool = True) -> tuple[str, int]:
        value, after = scanstring(s, end, strict)
        _no_surrogate(value, end)
        return value, after


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise BodyRefusedError(400, "malformed JSON", f"key {duplicate!r} given twice")
    for key in found:
        _no_surrogate(key, None)
    return found


def _no_surrogate(value: str, at: int | None) -> None:
    # Valid as a JSON escape, but no UTF-8 can carry it: encoding the answer or the
    # event would fail later, as a 500.
    if _SURROGATE.search(value):
        where = "" if at is None else f" (at char {at})"
        raise ValueError(f"a lone surrogate in a string{where}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is too large for a double")
    return value


def _integer(text: str) -> int | float:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= _LONGEST_INT else _finite(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
