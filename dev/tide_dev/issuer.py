"""A local OAuth 2.0 issuer: a signing key made at start, its JWKS served on loopback, and
access tokens (RFC 9068) minted for the local workload, the chaos load, the benchmarks and
the tests. The APIs check these tokens the way they check a real identity provider's."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tide.auth import jwt_settings

ISSUER = "https://issuer.tide.local/"
AUDIENCE = "tide"
# Every scope Tide's reference APIs ask for (ott.video_service, ott.subscription).
ALL_SCOPES = ("events:write", "subscriptions:read", "subscriptions:write")
TOKEN_TTL_S = 24 * 3600  # a local run outlives no token


class LocalIssuer:
    """One EC P-256 signing key, its JWKS at `jwks_url` while started, and tokens signed by it."""

    def __init__(self, *, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer, self.audience = issuer, audience
        self.kid = uuid.uuid4().hex[:16]
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk = orjson.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        self.jwks = orjson.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}]})
        self._server: ThreadingHTTPServer | None = None

    def token(
        self,
        subject: str,
        scopes: Iterable[str] = ALL_SCOPES,
        *,
        ttl_s: float = TOKEN_TTL_S,
        client: bool = True,
        **claims: object,
    ) -> str:
        """An access token for `subject`; `client` makes it a client acting for itself
        (RFC 9068's client_id equal to the subject: a service account)."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
            **({"client_id": subject} if client else {}),
            **claims,
        }
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(payload, self._key, algorithm="ES256", headers=headers)

    @property
    def jwks_url(self) -> str:
        assert self._server is not None, "the issuer is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"

    def settings(self) -> dict[str, str]:
        """The TIDE_AUTH_* variables of an API that trusts this issuer."""
        return jwt_settings(issuer=self.issuer, audience=self.audience, jwks_url=self.jwks_url)

    def headers(
        self, subject: str, scopes: Iterable[str] = ALL_SCOPES, **claims: Any
    ) -> dict[str, str]:
        """What a client of such an API sends: a token of `subject`'s (see `token`)."""
        return {"Authorization": f"Bearer {self.token(subject, scopes, **claims)}"}

    def start(self, host: str = "127.0.0.1", port: int = 0) -> LocalIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                jwks = issuer.jwks  # as it is now: a test may rotate the key
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a fetch per key rotation is not worth a line

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()
