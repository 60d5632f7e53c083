"""Who may call an API: OAuth 2.0 bearer JWTs (RFC 9068) checked against an issuer's JWKS, or
static API keys kept hashed; each operation asks for one scope.

The stack chooses the mode (TIDE_AUTH_MODE). A refusal is answered before the operation
runs, so a refused request never reaches Kafka or PostgreSQL (and before its path or body
is read, in an operation that reads its body by hand, as both reference APIs do; FastAPI
parses a declared body parameter first): 401 with `WWW-Authenticate` for no
credentials or bad ones, 403 for a missing scope, both as Problem bodies. An unreachable
JWKS is an outage (503, retry), never a 401 that a client would treat as final.

Who called is recorded on the events a request causes, as the CloudEvents authcontext
extension (`authtype`, `authid`), so a consumer can tell.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, cast

import jwt
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tide import metrics
from tide.health import RETRY_AFTER_S

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
# A key is this prefix and 32 random bytes: the prefix lets secret scanners find leaked ones.
API_KEY_PREFIX = "tide_"
# RFC 6750's realm: the same for both APIs, which share one identity provider.
REALM = "tide"
# Algorithms an issuer may sign with; never `none` or an HMAC, whose key would be public.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
# Seconds of clock difference tolerated between the issuer and this replica.
LEEWAY_S = 30
# The JWKS is fetched again when this old: a key the issuer revokes stops working
# within it (SigningKeys).
KEY_TTL_S = 300
# The last good keys keep serving this long while the issuer cannot be reached.
STALE_OK_S = 3600
# An unknown `kid` fetches the JWKS again at most this often.
REFETCH_AFTER_S = 10
FETCH_TIMEOUT_S = 5
# The `typ` headers an access token may carry: RFC 9068 §4 has resource servers refuse any
# other, so an ID token or some other JWT the issuer signs is not taken for an access token.
# Issuers that type their access tokens `JWT` (Keycloak, Entra ID) are let in by the stack.
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
# Verified tokens remembered at most: a client reuses its token until it expires, and a
# signature check costs more than the rest of a small request (bench/results-api.md).
VERIFIED_TOKENS = 4096
# One `typ` an access token may carry, as the stack and TIDE_AUTH_TOKEN_TYPES name it.
TOKEN_TYPE = r"[^,\s]+"  # noqa: S105 - a pattern, no secret
# What a client may be called: it travels as `authid` on every event it sends.
CLIENT_NAME = r"^[A-Za-z0-9_.:@-]{1,100}$"


def jwt_settings(
    *,
    issuer: str,
    audience: str,
    jwks_url: str,
    token_types: Sequence[str] = ACCESS_TOKEN_TYPES,
) -> dict[str, str]:
    """The TIDE_AUTH_* variables of an API that takes `issuer`'s tokens."""
    return {
        "TIDE_AUTH_MODE": AuthMode.JWT,
        "TIDE_AUTH_ISSUER": issuer,
        "TIDE_AUTH_AUDIENCE": audience,
        "TIDE_AUTH_JWKS_URL": jwks_url,
        "TIDE_AUTH_TOKEN_TYPES": ",".join(token_types),
    }


class AuthMode(StrEnum):
    NONE = "none"
    JWT = "jwt"
    API_KEYS = "api-keys"


# The CloudEvents authcontext extension's `authtype` values Tide records.
class AuthType(StrEnum):
    USER = "user"
    SERVICE_ACCOUNT = "service_account"
    API_KEY = "api_key"
    UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True)
class Caller:
    """Who sent a request, and what it may do."""

    type: AuthType
    id: str | None
    scopes: frozenset[str]

    def context(self) -> dict[str, str]:
        """The authcontext attributes of every event this caller causes."""
        return {"authtype": self.type, **({"authid": self.id} if self.id else {})}

    def acts_for(self, user: str) -> bool:
        """Whether this caller may act on `user`'s resources. A user's own token (a JWT
        whose subject is not its client) acts for that user alone; a service (a client
        acting for itself, or an API key) acts for any user its scopes allow, as does
        anyone on an API with no authentication."""
        return self.type is not AuthType.USER or self.id == user


ANONYMOUS = Caller(AuthType.UNAUTHENTICATED, None, frozenset())


class AuthError(HTTPException):
    """A refusal: 401 (who are you?) or 403 (you may not), or 503 when the JWKS is down.

    An HTTPException, so an app that never called `Guard.install` still answers the
    status and its challenge (in FastAPI's own body), never a 500."""

    def __init__(self, status: int, error: str, detail: str, challenge: str | None = None):
        headers = {"WWW-Authenticate": challenge} if challenge else {}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        super().__init__(status, detail, headers or None)
        self.error = error


class ApiKey(BaseModel):
    """One entry of TIDE_AUTH_API_KEYS: a client's key, as its SHA-256 only."""

    name: str = Field(pattern=CLIENT_NAME, description="who holds the key")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    scopes: list[str] = Field(min_length=1, description="what the key may do")


_API_KEYS = TypeAdapter(list[ApiKey])


def parse_api_keys(text: str) -> list[ApiKey]:
    """The entries of TIDE_AUTH_API_KEYS (a JSON list); ValueError names the entry and field."""
    try:
        entries = _API_KEYS.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the list)"
        raise ValueError(f"TIDE_AUTH_API_KEYS entry {where}: {first['msg']}") from None
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"TIDE_AUTH_API_KEYS names a client twice: {sorted(names)}")
    return entries


def hash_key(key: str) -> str:
    """What is stored of a key. A plain SHA-256 suffices: the keys are 256 random bits, not
    passwords a slow hash would have to protect from guessing."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(name: str, scopes: Sequence[str]) -> tuple[str, ApiKey]:
    """A fresh key, shown once, and its entry for TIDE_AUTH_API_KEYS."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, ApiKey(name=name, sha256=hash_key(key), scopes=list(scopes))


def api_keys_json(entries: Sequence[ApiKey]) -> str:
    return orjson.dumps([e.model_dump() for e in entries]).decode()


# Both schemes are declared with auto_error off: a missing credential is answered by
# `Guard`, as a Problem with the challenge, not by FastAPI's own 403.
_BEARER = HTTPBearer(
    bearerFormat="JWT",
    scheme_name="bearer",
    description="an OAuth 2.0 access token (RFC 9068) from the platform's issuer",
    auto_error=False,
)
_API_KEY = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="apiKey",
    description="a static API key (`tide auth new-key`)",
    auto_error=False,
)


class SigningKeys:
    """The issuer's signing keys by `kid`, fetched by PyJWT's JWKS client off the event loop.

    One fetch at a time, shared by every request that waits for it, on a thread of its
    own (never the default executor the probes use). A set older than KEY_TTL_S is
    fetched again in the background while its keys keep serving; for STALE_OK_S the last
    good keys outlive an issuer that cannot be reached, so its outage is not the API's.
    An unknown `kid` (a rotated key) fetches the set again at once, but at most every
    REFETCH_AFTER_S: a made-up `kid` must not make every request a fetch."""

    def __init__(self, jwks_url: str) -> None:
        self._client = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=False, cache_keys=False, timeout=FETCH_TIMEOUT_S
        )
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # monotonic time of the last good fetch
        self._tried_at = -math.inf
        self._fetching: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="jwks")

    async def key(self, kid: str | None) -> jwt.PyJWK:
        age = time.monotonic() - self._fetched_at
        found = self._find(kid) if age < STALE_OK_S else None
        if found is not None:
            if age >= KEY_TTL_S:
                self._fetch()  # in the background: this request goes on with the key it has
            return found
        if self._fetching is None and time.monotonic() - self._tried_at < REFETCH_AFTER_S:
            if age < STALE_OK_S:  # a set fetched moments ago does not have this key
                raise _invalid_token(f"the issuer has no signing key {kid!r}")
            raise _keys_unavailable()
        # Shielded: a request that gives up does not cancel the fetch the others await.
        await asyncio.shield(self._fetch())
        if time.monotonic() - self._fetched_at >= STALE_OK_S:
            raise _keys_unavailable()
        found = self._find(kid)
        if found is None:
            raise _invalid_token(f"the issuer has no signing key {kid!r}")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:  # a token may name no key when the issuer has only one
            only = list(self._keys.values())
            return only[0] if len(only) == 1 else None
        return self._keys.get(kid)

    def _fetch(self) -> asyncio.Task[None]:
        if self._fetching is None:
            self._tried_at = time.monotonic()
            self._fetching = asyncio.create_task(self._refresh())
        return self._fetching

    async def _refresh(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            self._keys = await loop.run_in_executor(self._executor, self._read)
            self._fetched_at = time.monotonic()
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError,
                OSError) as exc:  # fmt: skip
            # Unreachable, not JSON, not a key set, no usable key: all the issuer's to mend.
            log.error("the issuer's JWKS could not be read: %s", exc)
        finally:
            self._fetching = None

    def _read(self) -> dict[str | None, jwt.PyJWK]:
        keys = self._client.get_jwk_set(refresh=True).keys
        return {key.key_id: key for key in keys if key.public_key_use in (None, "sig")}


@dataclass(frozen=True)
class _Verified:
    """A token that passed every check, and what it was checked with."""

    caller: Caller
    kid: str | None
    key: jwt.PyJWK
    until: float  # Unix time past which PyJWT would refuse it: `exp` plus the leeway


class JwtVerifier:
    """Checks bearer tokens against one issuer, audience and JWKS.

    A token that passed is remembered until it expires, as long as the key that signed it
    is the one the issuer still publishes: a client sends the same token until it expires,
    and its signature need not be checked again. Every fetch of the JWKS makes new keys, so
    a token is checked again at least every KEY_TTL_S, and one signed by a key the issuer
    has withdrawn is refused from then on."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        token_types: Sequence[str] = ACCESS_TOKEN_TYPES,
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self._types = tuple(t.lower() for t in token_types)  # media types ignore case
        self._keys = SigningKeys(jwks_url)
        # By the token's SHA-256: what is kept in memory is no credential.
        self._verified: dict[bytes, _Verified] = {}

    async def caller(self, token: str) -> Caller:
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.pop(digest, None)
        if known is not None:
            # Raises as for any token when the key is gone or the issuer long unreachable.
            key = await self._keys.key(known.kid)
            if key is known.key and time.time() < known.until:
                # Put back as the newest: a full cache drops the token least recently used,
                # not a busy client's that merely came first.
                self._verified[digest] = known
                return known.caller
        verified = await self._verify(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.pop(next(iter(self._verified)))  # the least recently used
        self._verified[digest] = verified
        return verified.caller

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _invalid_token(f"not a JWT: {exc}") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self._types:
            expected = " or ".join(self._types)
            raise _invalid_token(f"typ {typ!r} is not an access token's ({expected})")
        kid = header.get("kid")
        key = await self._keys.key(kid)
        try:
            claims = jwt.decode(
                token,
                # The JWK itself, not its key: PyJWT then verifies with the JWK's own
                # algorithm, so a header naming another (RS256 on an EC key, HS256 with
                # the public key as its secret) fails as a bad token.
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _invalid_token(str(exc)) from None
        subject = str(claims["sub"])
        # RFC 9068 §2.2: a client acting for itself has its own id as the subject.
        kind = AuthType.SERVICE_ACCOUNT if claims.get("client_id") == subject else AuthType.USER
        caller = Caller(kind, subject, _scopes(claims))
        return _Verified(caller, kid, key, int(claims["exp"]) + LEEWAY_S)  # as PyJWT reads it


def _keys_unavailable() -> AuthError:
    # What went wrong is logged; the caller is told only to retry.
    return AuthError(503, "unavailable", "the issuer's signing keys cannot be fetched; retry")


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    # RFC 9068 §2.2.3.1 and RFC 8693: `scope`, space-separated; some issuers send `scp`,
    # a list or a string.
    held: set[str] = set()
    for claim in (claims.get("scope"), claims.get("scp")):
        if isinstance(claim, str):
            held.update(claim.split())
        elif isinstance(claim, list):
            held.update(str(s) for s in claim)
    return frozenset(held)


def _invalid_token(detail: str) -> AuthError:
    return AuthError(
        401,
        "unauthenticated",
        f"bearer token refused: {detail}",
        f'Bearer realm="{REALM}", error="invalid_token"',
    )


class ApiKeys:
    """Static keys, known by their hashes only."""

    def __init__(self, entries: Sequence[ApiKey]) -> None:
        # Looked up by hash: a lookup's timing tells an attacker nothing about a key, since
        # they cannot choose what their guess hashes to.
        self._by_hash = {e.sha256: e for e in entries}

    def caller(self, key: str) -> Caller:
        entry = self._by_hash.get(hash_key(key))
        if entry is None:
            raise AuthError(
                401, "unauthenticated", f"{API_KEY_HEADER} is not a known key", _key_challenge()
            )
        return Caller(AuthType.API_KEY, entry.name, frozenset(entry.scopes))


def _key_challenge() -> str:
    return f'ApiKey realm="{REALM}", header="{API_KEY_HEADER}"'


class Guard:
    """The API side of one mode: a FastAPI dependency per scope, and its answers."""

    def __init__(self, mode: AuthMode, *, jwt_: JwtVerifier | None, keys: ApiKeys | None) -> None:
        self.mode, self._jwt, self._keys = mode, jwt_, keys

    def install(self, app: FastAPI) -> None:
        """Answer refusals as Problems; `requires` adds the schemes to the OpenAPI document."""

        async def refused(_request: Request, exc: Exception) -> Response:
            assert isinstance(exc, AuthError)  # counted where raised (_accounted)
            body = {"error": exc.error, "detail": exc.detail}
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

        app.add_exception_handler(AuthError, refused)
        # Each refusal series exists at 0 from the start: a panel reads "none", not "no data".
        for status in ("401", "403", "503"):
            metrics.AUTH_REFUSALS.labels(status)

    def problems(self) -> tuple[int, ...]:
        """The refusals an operation behind this guard may answer."""
        return () if self.mode is AuthMode.NONE else (401, 403)

    def requires(self, scope: str) -> Any:
        """The dependency of an operation that needs `scope`: it yields the Caller.

        FastAPI runs it before it validates the operation's own parameters or reads its
        body, so a refused request gets 401 or 403, never a 422 about its content."""
        match self.mode:
            case AuthMode.NONE:

                async def anyone() -> Caller:
                    return ANONYMOUS

                return Depends(anyone)
            case AuthMode.JWT:
                verifier = self._jwt
                assert verifier is not None

                @_accounted
                async def bearer(
                    credentials: HTTPAuthorizationCredentials | None = Security(  # noqa: B008
                        _BEARER, scopes=[scope]
                    ),
                ) -> Caller:
                    if credentials is None:
                        raise AuthError(
                            401,
                            "unauthenticated",
                            "send an access token: Authorization: Bearer <JWT>",
                            f'Bearer realm="{REALM}", scope="{scope}"',
                        )
                    caller = await verifier.caller(credentials.credentials)
                    return _scoped(caller, scope, f'Bearer realm="{REALM}"')

                return Depends(bearer)
            case AuthMode.API_KEYS:
                keys = self._keys
                assert keys is not None

                @_accounted
                async def api_key(
                    key: str | None = Security(_API_KEY, scopes=[scope]),
                ) -> Caller:
                    if not key:
                        raise AuthError(
                            401,
                            "unauthenticated",
                            f"send an API key: {API_KEY_HEADER}: <key>",
                            _key_challenge(),
                        )
                    return _scoped(keys.caller(key), scope, _key_challenge())

                return Depends(api_key)


_Check = TypeVar("_Check", bound=Callable[..., Awaitable[Caller]])


def _accounted(check: _Check) -> _Check:
    """`check`, with each refusal counted (tide_api_auth_refusals_total); it is timed with
    every other answer (tide.health.time_answers)."""

    @functools.wraps(check)
    async def accounted(*args: Any, **kwargs: Any) -> Caller:
        try:
            return await check(*args, **kwargs)
        except AuthError as exc:
            metrics.AUTH_REFUSALS.labels(str(exc.status_code)).inc()
            raise

    return cast(_Check, accounted)


def _scoped(caller: Caller, scope: str, challenge: str) -> Caller:
    """`caller`, if it holds `scope`; else 403 with the scheme's challenge (RFC 6750 §3.1)."""
    if scope not in caller.scopes:
        held = " ".join(sorted(caller.scopes)) or "none"
        raise AuthError(
            403,
            "forbidden",
            f"{caller.id} may not do this: it needs scope {scope!r} (it has: {held})",
            f'{challenge}, error="insufficient_scope", scope="{scope}"',
        )
    return caller


def guard_from(
    mode: AuthMode,
    *,
    issuer: str = "",
    audience: str = "",
    jwks_url: str = "",
    token_types: Sequence[str] = ACCESS_TOKEN_TYPES,
    api_keys: str = "",
) -> Guard:
    """The guard a process's settings describe (checked by Settings at start)."""
    match mode:
        case AuthMode.NONE:
            return Guard(mode, jwt_=None, keys=None)
        case AuthMode.JWT:
            verifier = JwtVerifier(
                issuer=issuer, audience=audience, jwks_url=jwks_url, token_types=token_types
            )
            return Guard(mode, jwt_=verifier, keys=None)
        case AuthMode.API_KEYS:
            return Guard(mode, jwt_=None, keys=ApiKeys(parse_api_keys(api_keys)))


# The guard of an API built without settings (tests, the OpenAPI document): no credentials.
OPEN = Guard(AuthMode.NONE, jwt_=None, keys=None)
