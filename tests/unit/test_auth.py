"""Who may call an API: bearer JWTs against a real JWKS over HTTP, API keys, and the answers
a refused client gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from tide import auth
from tide.auth import (
    API_KEY_HEADER,
    AuthMode,
    AuthType,
    Caller,
    Guard,
    api_keys_json,
    guard_from,
    hash_key,
    new_api_key,
    parse_api_keys,
)
from tide.cli import app
from tide.health import time_answers
from tide.settings import Settings
from tide.waiting import wait_until
from tide_dev.issuer import LocalIssuer
from tide_dev.ports import free_port

SCOPE = "events:write"
TYPED = {"typ": "at+jwt"}  # RFC 9068's access token type, which the APIs require


def _app(guard: Guard) -> FastAPI:
    app = FastAPI()
    guard.install(app)
    time_answers(app)  # as `tide run` serves every API

    may_send = guard.requires(SCOPE)

    @app.post("/v1/events")
    async def send(caller: Caller = may_send) -> dict[str, object]:
        return {"type": caller.type, "id": caller.id}

    return app


@pytest.fixture
def client(issuer: LocalIssuer) -> Iterator[TestClient]:
    guard = guard_from(
        AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url
    )
    # One event loop for every request, as a server has: a background key refresh that
    # one request starts is not cancelled when that request's loop would end.
    with TestClient(_app(guard)) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_from_the_issuer_with_the_scope_names_its_caller(
    client: TestClient, issuer: LocalIssuer
) -> None:
    answer = client.post("/v1/events", headers=_bearer(issuer.token("player-app", [SCOPE])))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"type": "service_account", "id": "player-app"}
    person = issuer.token("u-42", [SCOPE], client=False)
    assert client.post("/v1/events", headers=_bearer(person)).json()["type"] == "user"
    # Some issuers send scopes as a list (`scp`).
    listed = issuer.token("u-43", [], scp=[SCOPE])
    assert client.post("/v1/events", headers=_bearer(listed)).status_code == 200


def test_a_user_acts_for_itself_and_a_service_for_anyone() -> None:
    user = Caller(AuthType.USER, "u-42", frozenset({SCOPE}))
    assert user.acts_for("u-42")
    assert not user.acts_for("u-43")
    for service in (
        Caller(AuthType.SERVICE_ACCOUNT, "billing", frozenset()),
        Caller(AuthType.API_KEY, "backend", frozenset()),
        auth.ANONYMOUS,  # an API that authenticates no one
    ):
        assert service.acts_for("u-43")


def test_no_credentials_is_a_401_problem_with_a_bearer_challenge(client: TestClient) -> None:
    answer = client.post("/v1/events")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == f'Bearer realm="tide", scope="{SCOPE}"'
    assert answer.json() == {
        "error": "unauthenticated",
        "detail": "send an access token: Authorization: Bearer <JWT>",
    }


def _foreign_rsa_token(issuer: LocalIssuer) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "x", "exp": 2**31}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": issuer.kid, **TYPED})


def _public_key_as_hmac_secret(issuer: LocalIssuer) -> str:
    # The classic confusion: HS256 under the real kid, the published key as its secret.
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "x", "exp": 2**31}
    secret = json.loads(issuer.jwks)["keys"][0]["x"].encode()
    token: str = jwt.api_jws.PyJWS().encode(
        json.dumps(claims).encode(),
        secret,
        algorithm="HS256",
        headers={"kid": issuer.kid, **TYPED},
    )
    return token


def _typed(issuer: LocalIssuer, typ: str | None) -> str:
    """A token the issuer signed with its own key, typed `typ` (an ID token is `JWT`)."""
    token = issuer.token("p", [SCOPE])
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(
        claims, issuer._key, algorithm="ES256", headers={"kid": issuer.kid, "typ": typ}
    )


def _unsigned(issuer: LocalIssuer) -> str:
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "x", "exp": 2**31}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": issuer.kid, **TYPED})


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda i: i.token("p", [SCOPE], ttl_s=-120), "Signature has expired"),
        (lambda i: i.token("p", [SCOPE], aud="someone-else"), "Audience doesn't match"),
        (lambda i: i.token("p", [SCOPE], iss="https://evil.example/"), "Invalid issuer"),
        (lambda i: i.token("p", [SCOPE])[:-4] + "AAAA", "Signature verification failed"),
        (_foreign_rsa_token, "does not match the key's algorithm"),
        (_unsigned, "alg"),
        (lambda i: "not.a.token", "not a JWT"),
        (
            lambda i: jwt.encode(
                {"sub": "x"}, "k" * 32, algorithm="HS256", headers={"kid": "zz", **TYPED}
            ),
            "the issuer has no signing key 'zz'",
        ),
        (lambda i: _typed(i, "JWT"), "typ 'JWT' is not an access token's"),
        (lambda i: _typed(i, None), "typ None is not an access token's"),
        (_public_key_as_hmac_secret, "alg value is not allowed"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "tampered",
        "foreign-key",
        "alg-none",
        "garbage",
        "kid",
        "hmac-confusion",
        "typ-jwt",
        "typ-missing",
    ],
)
def test_a_bad_token_is_a_401_that_says_why(
    client: TestClient, issuer: LocalIssuer, make: object, says: str
) -> None:
    token = make(issuer)  # type: ignore[operator]
    answer = client.post("/v1/events", headers=_bearer(token))
    assert answer.status_code == 401, answer.text
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert answer.json()["error"] == "unauthenticated"
    assert says in answer.json()["detail"]


def test_a_token_without_the_scope_is_a_403_naming_it(
    client: TestClient, issuer: LocalIssuer
) -> None:
    answer = client.post("/v1/events", headers=_bearer(issuer.token("reader", ["events:read"])))
    assert answer.status_code == 403
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert answer.json() == {
        "error": "forbidden",
        "detail": "reader may not do this: it needs scope 'events:write' (it has: events:read)",
    }


def test_an_unreachable_jwks_is_a_503_to_retry_not_a_401() -> None:
    issuer = LocalIssuer()  # never started: nothing answers at its address
    jwks = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"
    guard = guard_from(AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=jwks)
    answer = TestClient(_app(guard)).post("/v1/events", headers=_bearer(issuer.token("p")))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.json() == {
        "error": "unavailable",
        "detail": "the issuer's signing keys cannot be fetched; retry",
    }


@pytest.mark.parametrize(
    "served",
    [b'{"keys": []}', b"<html>sign in</html>", b"[]", b'{"keys": [{"kty": "nope"}]}'],
    ids=["no-keys", "html", "not-an-object", "unusable-key"],
)
def test_a_jwks_that_is_not_a_key_set_is_a_503_never_a_500(served: bytes) -> None:
    issuer = LocalIssuer()
    issuer.jwks = served  # the issuer answers 200, with something that is not its keys
    with issuer:
        guard = guard_from(
            AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url
        )
        answer = TestClient(_app(guard)).post("/v1/events", headers=_bearer(issuer.token("p")))
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"


def test_a_rotated_key_is_fetched_and_the_last_good_keys_outlive_the_issuer() -> None:
    with LocalIssuer() as issuer:
        guard = guard_from(
            AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url
        )
        client = TestClient(_app(guard))
        assert client.post("/v1/events", headers=_bearer(issuer.token("p"))).status_code == 200
        rotated = LocalIssuer()
        issuer.jwks = rotated.jwks  # the issuer publishes a new key, then signs with it
        keys = guard._jwt._keys  # type: ignore[union-attr]
        keys._tried_at -= 60  # the last fetch long enough ago for an unknown kid to fetch
        assert client.post("/v1/events", headers=_bearer(rotated.token("p"))).status_code == 200
    # The issuer is gone: the keys fetched last still check tokens past their TTL (the
    # refresh fails in the background), and a made-up kid is refused, not fetched again.
    keys._fetched_at -= 600
    assert client.post("/v1/events", headers=_bearer(rotated.token("p"))).status_code == 200
    made_up = jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256", headers={"kid": "other"})
    assert client.post("/v1/events", headers=_bearer(made_up)).status_code == 401


def test_an_issuer_that_types_its_tokens_jwt_is_trusted_when_the_stack_says_so(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {**issuer.settings(), "TIDE_AUTH_TOKEN_TYPES": "at+jwt,JWT"}.items():
        monkeypatch.setenv(name, value)
    client = TestClient(_app(Settings().guard()))
    assert client.post("/v1/events", headers=_bearer(_typed(issuer, "JWT"))).status_code == 200
    missing = client.post("/v1/events", headers=_bearer(_typed(issuer, None)))
    assert "typ None is not an access token's (at+jwt or jwt)" in missing.json()["detail"]


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token whose signature and claims the API checks, in order."""
    checked: list[str] = []
    decode = auth.jwt.decode

    def counted(token: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        checked.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counted)
    return checked


def test_a_token_checked_once_is_not_checked_again_until_it_expires(
    client: TestClient, issuer: LocalIssuer, decoded: list[str]
) -> None:
    token = issuer.token("p", [SCOPE])
    for _ in range(3):
        assert client.post("/v1/events", headers=_bearer(token)).status_code == 200
    assert decoded == [token]
    # A token checked once is still refused once past `exp` and the leeway.
    expiring = issuer.token("p", [SCOPE], ttl_s=-(auth.LEEWAY_S - 12))
    assert client.post("/v1/events", headers=_bearer(expiring)).status_code == 200
    wait_until(
        lambda: client.post("/v1/events", headers=_bearer(expiring)).status_code == 401,
        timeout=30,
        what="a remembered token refused once expired",
    )


def test_a_full_cache_forgets_the_token_least_recently_used(
    client: TestClient, issuer: LocalIssuer, decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 2)
    busy, once, newcomer = (issuer.token(name, [SCOPE]) for name in ("busy", "once", "new"))
    for token in (busy, once, busy, newcomer, busy):
        assert client.post("/v1/events", headers=_bearer(token)).status_code == 200
    # The busy client's token, used just before the newcomer came, was kept; `once` was not.
    assert decoded == [busy, once, newcomer]
    assert client.post("/v1/events", headers=_bearer(once)).status_code == 200
    assert decoded[-1] == once


def test_a_remembered_token_is_refused_once_the_issuer_withdraws_its_key() -> None:
    with LocalIssuer() as issuer:
        guard = guard_from(
            AuthMode.JWT, issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url
        )
        with TestClient(_app(guard)) as client:
            token = issuer.token("p")
            assert client.post("/v1/events", headers=_bearer(token)).status_code == 200
            issuer.jwks = LocalIssuer().jwks  # the old key is withdrawn
            keys = guard._jwt._keys  # type: ignore[union-attr]
            keys._fetched_at -= auth.KEY_TTL_S  # due for a refresh: the next request starts it
            wait_until(
                lambda: client.post("/v1/events", headers=_bearer(token)).status_code == 401,
                timeout=30,
                what="a token signed by a withdrawn key refused",
            )
            refused = client.post("/v1/events", headers=_bearer(token)).json()
        says = f"bearer token refused: the issuer has no signing key {issuer.kid!r}"
        assert refused["detail"] == says


def test_a_refusal_is_timed_like_an_answer(client: TestClient) -> None:
    def refusals() -> float:
        labels = {"status": "401"}
        return REGISTRY.get_sample_value("tide_api_request_duration_seconds_count", labels) or 0.0

    before = refusals()
    assert client.post("/v1/events").status_code == 401
    assert refusals() == before + 1


def test_api_keys_are_kept_hashed_and_carry_their_own_scopes() -> None:
    writer, writer_entry = new_api_key("player-app", [SCOPE])
    reader, reader_entry = new_api_key("dashboard", ["events:read"])
    stored = api_keys_json([writer_entry, reader_entry])
    assert writer not in stored
    assert reader not in stored
    client = TestClient(_app(guard_from(AuthMode.API_KEYS, api_keys=stored)))

    answer = client.post("/v1/events", headers={API_KEY_HEADER: writer})
    assert answer.json() == {"type": "api_key", "id": "player-app"}
    assert client.post("/v1/events", headers={API_KEY_HEADER: reader}).status_code == 403
    unknown = client.post("/v1/events", headers={API_KEY_HEADER: writer + "x"})
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "X-API-Key is not a known key"
    missing = client.post("/v1/events")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'ApiKey realm="tide", header="X-API-Key"'


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ('[{"name": "a", "sha256": "00", "scopes": ["x"]}]', "entry 0.sha256"),
        ('[{"name": "a", "sha256": "' + "0" * 64 + '", "scopes": []}]', "entry 0.scopes"),
        ("{not json", "TIDE_AUTH_API_KEYS entry (the list): Invalid JSON"),
    ],
)
def test_a_malformed_key_list_is_refused_naming_the_entry(entries: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".*") as refused:
        parse_api_keys(entries)
    assert says in str(refused.value)


def test_settings_refuse_a_mode_without_what_it_needs() -> None:
    with pytest.raises(ValueError, match="TIDE_AUTH_MODE=jwt needs TIDE_AUTH_AUDIENCE"):
        Settings(auth_mode="jwt", auth_issuer="i", auth_jwks_url="http://x")
    with pytest.raises(ValueError, match="TIDE_AUTH_MODE=api-keys needs TIDE_AUTH_API_KEYS"):
        Settings(auth_mode="api-keys")


def test_new_key_prints_the_key_once_and_the_entry_holds_only_its_hash() -> None:
    made = CliRunner().invoke(app, ["auth", "new-key", "player-app", "--scope", SCOPE])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("tide_")
    (entry,) = parse_api_keys("[" + made.stderr.split(": ", 1)[1] + "]")
    assert (entry.name, entry.sha256, entry.scopes) == ("player-app", hash_key(key), [SCOPE])
    refused = CliRunner().invoke(app, ["auth", "new-key", "two words", "--scope", SCOPE])
    assert refused.exit_code == 3
    assert "error: name 'two words': String should match pattern" in refused.stderr
