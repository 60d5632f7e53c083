"""The HTTP face of a non-API process: /healthz, /readyz (with a reason) and /metrics."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from pydantic import BaseModel, Field

from tide import metrics
from tide.codecs.json_schema import InvalidEventError, UnknownEventTypeError
from tide.errors import PLATFORM_ERRORS

# An event the publisher's codec refuses (schema-invalid, of no catalog type): the client's
# mistake, answered 422 naming the field, whatever API raised it.
REFUSED_EVENTS = (InvalidEventError, UnknownEventTypeError)
# Returns None when ready (or alive), else why not (shown to the kubelet and to people).
ReadinessCheck = Callable[[], str | None]
LivenessCheck = Callable[[], str | None]


class Problem(BaseModel):
    """The body of every refusal and fault: its kind, and what exactly."""

    error: str = Field(description="the kind of refusal or fault, the same for every such answer")
    detail: str = Field(description="what exactly was wrong, naming the field or the part at fault")


METRICS_PATH = "/metrics"
# Seconds a 503's Retry-After asks a client to wait: what is down is often back within it,
# and an answer that comes at once must not invite a tight retry loop.
RETRY_AFTER_S = 1
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the statuses a route answers with a Problem."""
    return {
        status: {"model": Problem, **({"headers": _RETRY_AFTER} if status == 503 else {})}
        for status in statuses
    }


def unavailable(error: str, detail: str) -> JSONResponse:
    """A 503 Problem; every 503 carries Retry-After."""
    return JSONResponse(
        {"error": error, "detail": detail},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# Not answers to an API's clients: the probes and the scrape.
UNTIMED = frozenset({"/healthz", "/readyz", METRICS_PATH})


def time_answers(app: FastAPI) -> None:
    """Observe how long each answer of the API took, by status code
    (tide_api_request_duration_seconds): every route's, whatever it returns, and every
    refusal before one runs (401 and 403, a body FastAPI refuses with 422, a 503 the shared
    handler gives a broker that is down). `tide run` does this for every API it serves;
    an app that did it already is left as it is, so no answer is counted twice."""
    if not any(m.cls is cast(Any, _Timed) for m in app.user_middleware):
        app.add_middleware(_Timed)


class _Timed:
    """Pure ASGI: the status is read off the response as it starts. Starlette's
    BaseHTTPMiddleware cost about a third of the player API's throughput (bench/)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNTIMED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: what Starlette answers an exception with

        async def observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            seconds = time.perf_counter() - started
            metrics.API_REQUEST_SECONDS.labels(str(status)).observe(seconds)


def add_health_routes(
    app: FastAPI, ready: ReadinessCheck, alive: LivenessCheck | None = None
) -> None:
    """/healthz, /readyz and /metrics on any Tide HTTP app (APIs and workers alike).

    /healthz fails only for what a restart mends (tide.liveness); /readyz also for a
    dependency that is down."""

    @app.get("/healthz", response_class=PlainTextResponse, responses=problems(503))
    async def healthz() -> Response:
        reason = None if alive is None else await asyncio.to_thread(alive)
        if reason is not None:
            return unavailable("not alive", reason)
        return PlainTextResponse("ok")

    @app.get("/readyz", response_class=PlainTextResponse, responses=problems(503))
    async def readyz() -> Response:
        # Checks talk to brokers: keep them off the event loop.
        reason = await asyncio.to_thread(ready)
        if reason is not None:
            return unavailable("not ready", reason)
        return PlainTextResponse("ready")

    @app.get(METRICS_PATH, response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def platform_fault(_request: Request, exc: Exception) -> Response:
        # A dependency that is down is not a server bug: 503 with what is down, which
        # clients retry, never a bare 500 (tide.errors.PLATFORM_ERRORS). An API's load
        # shedding (a pool with no connection to spare) is one of these.
        return unavailable("unavailable", str(exc))

    for fault in PLATFORM_ERRORS:
        app.add_exception_handler(fault, platform_fault)

    async def invalid(_request: Request, exc: Exception) -> Response:
        # FastAPI's own answer echoes the input, which may not encode as JSON (NaN, a lone
        # surrogate): a 500 for a client's mistake. Name the field, never echo.
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        field = ".".join(str(part) for part in first["loc"]) or "(request)"
        detail = f"{field}: {first['msg']}"
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)

    async def refused_event(_request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "invalid event", "detail": str(exc)}, status_code=422)

    for refusal in REFUSED_EVENTS:
        app.add_exception_handler(refusal, refused_event)


def health_app(ready: ReadinessCheck, alive: LivenessCheck | None = None) -> FastAPI:
    app = FastAPI(title="Tide process health", docs_url=None, redoc_url=None)
    add_health_routes(app, ready, alive)
    return app


class PortInUseError(RuntimeError):
    """The HTTP port cannot be bound: configuration that can never work (exit 3)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket for an HTTP server, bound before anything else starts.

    uvicorn binds late and, on failure, exits its own thread: a consumer process went on
    consuming with no /healthz or /metrics, so it could never be probed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(
            f"cannot listen on {host}:{port} (TIDE_HTTP_PORT): {exc.strerror}"
        ) from None
    return sock


def metrics_apart(app: FastAPI, port: int) -> None:
    """Serve /metrics on `port` alone, no longer on `app`'s port: an API's public Service
    exposes its port, and what a process counts is for Prometheus, not its callers."""
    app.router.routes[:] = [
        route for route in app.router.routes if getattr(route, "path", None) != METRICS_PATH
    ]
    try:
        # prometheus_client's own server, on a daemon thread: any path answers the metrics.
        start_http_server(port, addr="0.0.0.0")  # noqa: S104 - Prometheus scrapes the pod
    except OSError as exc:
        raise PortInUseError(
            f"cannot listen on 0.0.0.0:{port} (TIDE_METRICS_PORT): {exc.strerror}"
        ) from None


class HealthServer:
    """Serves health_app on a thread, so the process's main work keeps the main thread;
    with `metrics_port`, /metrics on that port instead (metrics_apart)."""

    def __init__(
        self,
        ready: ReadinessCheck,
        port: int,
        *,
        alive: LivenessCheck | None = None,
        metrics_port: int = 0,
    ) -> None:
        app = health_app(ready, alive)
        # All interfaces: the probes come from the kubelet.
        self._socket = bind("0.0.0.0", port)  # noqa: S104
        if metrics_port:
            metrics_apart(app, metrics_port)
        config = uvicorn.Config(app, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="health", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
