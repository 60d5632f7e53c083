"""API: the video-service (`tide run video-service`) against a bare FastAPI endpoint that
publishes the same event with a bare producer (bench/bare_api.py), both served by uvicorn
the same way, loaded by vegeta. And what authentication costs: the same video-service
taking a bearer JWT on every request (tide.auth, a local issuer's ES256 key) against it
without one, in the same run; once with one token reused, as a client sends it until it
expires (checked once, then remembered), once with a new token on every request (each
one's signature checked).

vegeta, not wrk: wrk is closed-loop (a slow answer delays the next request), so it can
find the peak but cannot hold 50% or 80% of it, and its latencies hide queueing. vegeta
sends at a fixed rate whatever the answers do, so its p99 is the one a client sees.
Peak = accepted (202) answers per second with 32 connections sending as fast as they can.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Mode, Row, Section, Spread, alternating
from bench.payloads import watch_completed
from bench.report import markdown
from bench.setting import Setting
from ott.video_service import WRITE
from tide.waiting import wait_until
from tide_dev.chaos.processes import LocalPlatform, ServiceProcess
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port

TARGET = 0.7
# An ES256 verification is about a tenth of a millisecond; a request without one costs
# about a millisecond of CPU here: authentication may cost at most a fifth of the peak.
JWT_TARGET = 0.8
# Tokens minted for each attack of the new-token case: more than the API remembers
# (tide.auth.VERIFIED_TOKENS) and than an attack sends, so none is checked twice.
NEW_TOKENS = 12_000
P99_BOUND_MS = 20.0
FIXED_RATE = 500  # requests/s: a moderate load, the same for both, whatever their peaks
# Each server the bench loads, as the latency table names it.
SERVERS = {
    "tide": "ours",
    "jwt": "ours with JWT",
    "jwt-new": "ours with a new JWT each",
    "bare": "bare",
}
VEGETA = Path(__file__).parent.parent / "bin" / "vegeta"


@dataclass(frozen=True)
class Attack:
    rate: float  # accepted answers per second
    p50_ms: float
    p99_ms: float
    success: float  # share of 202s


def vegeta() -> str:
    found = str(VEGETA) if VEGETA.exists() else shutil.which("vegeta")
    if found is None:
        raise SystemExit("bench api: vegeta is missing; `make bench` builds it into bin/")
    return found


def vegeta_attack(
    targets: list[str], *, rate: int, seconds: float, stdin: bytes | None = None
) -> bytes:
    """vegeta's binary results of `rate` requests/s (0: as fast as 32 connections go) for
    `seconds` at `targets` (its target options; none: the target on `stdin`)."""
    pace = ["-rate=0", "-max-workers=32"] if rate == 0 else [f"-rate={rate}/s", "-workers=32"]
    return subprocess.run(
        [
            *(vegeta(), "attack", *targets, *pace),
            *(f"-duration={seconds}s", "-timeout=10s", "-keepalive=true"),
        ],
        input=stdin,
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    ).stdout


def attack(
    url: str,
    body: Path,
    *,
    rate: int,
    seconds: float,
    headers: Sequence[Mapping[str, str]] = ({},),
) -> Attack:
    """`rate` requests/s for `seconds` (0: as fast as 32 connections go), the requests
    carrying each of `headers` in turn."""

    def target(sent: Mapping[str, str]) -> str:
        lines = "".join(f"{name}: {value}\n" for name, value in sent.items())
        return f"POST {url}/v1/events\nContent-Type: application/json\n{lines}@{body}\n"

    targets = "\n".join(target(sent) for sent in headers)  # vegeta takes them in turn
    report = subprocess.run(
        [vegeta(), "report", "-type=json"],
        input=vegeta_attack([], rate=rate, seconds=seconds, stdin=targets.encode()),
        capture_output=True,
        check=True,
        timeout=60,
    )
    figures = json.loads(report.stdout)
    codes = figures["status_codes"]
    accepted = codes.get("202", 0)
    return Attack(
        rate=accepted / figures["duration"] * 1e9 if figures["duration"] else 0.0,
        p50_ms=figures["latencies"]["50th"] / 1e6,
        p99_ms=figures["latencies"]["99th"] / 1e6,
        success=accepted / max(figures["requests"], 1),
    )


@dataclass(frozen=True)
class Server:
    url: str
    headers: Callable[[], Sequence[Mapping[str, str]]]  # what an attack's requests carry


@contextmanager
def servers(setting: Setting) -> Iterator[dict[str, Server]]:
    """Ours open, ours behind a JWT (one token, and a new one per request), and the bare
    endpoint, all up and ready."""
    suffix = setting.catalog.topics[0].name.rsplit("-", 1)[-1]
    env = {"TIDE_KAFKA_BOOTSTRAP": setting.bootstrap, "TIDE_CATALOG_SUFFIX": suffix}
    platform = LocalPlatform(env, setting.workdir)
    issuer = LocalIssuer().start()
    guarded = LocalPlatform(env, setting.workdir / "jwt", issuer=issuer)
    (setting.workdir / "jwt").mkdir(exist_ok=True)
    topic = str(setting.catalog.event("video.watch.completed").topic)
    port = free_port()
    log = setting.workdir / "bare-api.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.bare_api", "--port", str(port)),
                *("--bootstrap", setting.bootstrap, "--topic", topic),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    bare = ServiceProcess("bare-api", port, log, popen)
    try:
        ours = platform.start("video-service")
        with_jwt = guarded.start("video-service")
        wait_until(bare.ready, timeout=60, what="bare API ready", alive=bare.exit_reason)
        reused = [guarded.credentials("bench")]

        def new_tokens() -> list[dict[str, str]]:
            return [issuer.headers(f"bench-{n}", [WRITE]) for n in range(NEW_TOKENS)]

        yield {
            "tide": Server(ours.url, lambda: [{}]),
            "jwt": Server(with_jwt.url, lambda: reused),
            "jwt-new": Server(with_jwt.url, new_tokens),
            "bare": Server(bare.url, lambda: [{}]),
        }
    finally:
        popen.send_signal(signal.SIGTERM)
        popen.wait(timeout=30)
        platform.stop()
        guarded.stop()
        issuer.stop()


def measure(setting: Setting, mode: Mode) -> list[Row | Section]:
    body = setting.workdir / "watch-completed.json"
    body.write_text(json.dumps(watch_completed(1)))
    seconds = 3.0 * mode.scale
    runs: dict[str, dict[str, list[Attack]]] = {
        name: {"peak": [], "50%": [], "80%": [], f"{FIXED_RATE}/s": []} for name in SERVERS
    }
    with servers(setting) as found:
        for server in found.values():  # warm-up
            attack(server.url, body, rate=0, seconds=seconds, headers=server.headers())
        for n in range(mode.rounds):
            for name in alternating(list(found), n):
                url, headers = found[name].url, found[name].headers
                peak = attack(url, body, rate=0, seconds=seconds, headers=headers())
                runs[name]["peak"].append(peak)
                for share in (0.5, 0.8):
                    rate = max(1, int(peak.rate * share))
                    at = attack(url, body, rate=rate, seconds=seconds, headers=headers())
                    runs[name][f"{share:.0%}"].append(at)
                fixed = attack(url, body, rate=FIXED_RATE, seconds=seconds, headers=headers())
                runs[name][f"{FIXED_RATE}/s"].append(fixed)

    def peaks(ours: str, baseline: str) -> Spread:
        return Spread(
            tuple(
                o.rate / b.rate
                for o, b in zip(runs[ours]["peak"], runs[baseline]["peak"], strict=True)
            )
        )

    def p(name: str, load: str, field: str) -> float:
        return float(statistics.median(getattr(a, field) for a in runs[name][load]))

    loads = ("50%", "80%", f"{FIXED_RATE}/s")
    ms = ("p50_ms", "p99_ms")
    failed = min(a.success for name in runs for load in runs[name] for a in runs[name][load])
    table = markdown(
        [
            "load",
            *(f"{who} {field[:3]} ms" for who in SERVERS.values() for field in ms),
        ],
        (
            [
                load if load.endswith("/s") else f"{load} of each peak",
                *(f"{p(name, load, field):.1f}" for name in SERVERS for field in ms),
            ]
            for load in loads
        ),
    )
    fixed_p99 = p("tide", f"{FIXED_RATE}/s", "p99_ms")
    jwt_p99 = p("jwt", f"{FIXED_RATE}/s", "p99_ms")
    new_p99 = p("jwt-new", f"{FIXED_RATE}/s", "p99_ms")
    latency = Section(
        "API latency at fixed loads (vegeta, open loop, medians of the rounds)",
        table + f"\nLowest share of 202 answers in any attack: {failed:.1%}.",
        (
            (
                f"API p99 < {P99_BOUND_MS:.0f} ms at {FIXED_RATE} req/s: {fixed_p99:.1f} ms",
                fixed_p99 < P99_BOUND_MS,
            ),
            (
                f"API with a JWT p99 < {P99_BOUND_MS:.0f} ms at {FIXED_RATE} req/s:"
                f" {jwt_p99:.1f} ms",
                jwt_p99 < P99_BOUND_MS,
            ),
            (
                f"API with a new JWT per request p99 < {P99_BOUND_MS:.0f} ms at {FIXED_RATE}"
                f" req/s: {new_p99:.1f} ms",
                new_p99 < P99_BOUND_MS,
            ),
        ),
    )

    def row(
        case: str, ours: str, baseline: str, pair: tuple[str, str], target: float | None
    ) -> Row:
        mine, theirs = pair
        return Row(
            path="API",
            case=case,
            ours=ours,
            baseline=baseline,
            ratio=peaks(mine, theirs),
            target=target,
            ours_rate=p(mine, "peak", "rate"),
            baseline_rate=p(theirs, "peak", "rate"),
            extra="peak: 32 connections as fast as they go; latencies below the table",
        )

    return [
        row(
            "watch event",
            "video-service: body limit, validation, envelope, publish, 202",
            "bare FastAPI endpoint + bare producer",
            ("tide", "bare"),
            TARGET,
        ),
        # What authentication costs a request, in the same run.
        row(
            "watch event with a bearer JWT",
            "the same, one ES256 token reused: checked once, then its scope per request",
            "the same video-service without authentication",
            ("jwt", "tide"),
            JWT_TARGET,
        ),
        row(
            "watch event with a new bearer JWT each time",
            "the same, every request's token checked: signature, claims, scope",
            "the same video-service without authentication",
            ("jwt-new", "tide"),
            None,  # the worst case, reported: clients reuse their tokens
        ),
        latency,
    ]
