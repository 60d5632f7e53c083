"""Each API's OpenAPI document: the examples it shows are requests it takes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator

from ott import subscription, video_service
from ott.catalog import CATALOG
from tide.auth import OPEN, AuthMode, Guard, api_keys_json, guard_from, new_api_key


def _apps(guard: Guard = OPEN) -> dict[str, FastAPI]:
    # The document is built without serving: no broker or database is reached, so the
    # publisher only has to answer readiness.
    publisher: Any = SimpleNamespace(unready_reason=lambda: None)
    return {
        "video-service": video_service.create_app(
            CATALOG, publisher, max_body_bytes=1024, guard=guard
        ),
        "subscription": subscription.create_app(
            "postgresql://-", publisher, relay=False, guard=guard
        ),
    }


# The scope each operation asks for: what a client's token or key must hold.
SCOPES = {
    "POST /v1/events": "events:write",
    "POST /v1/subscriptions/{subscription_id}/start": "subscriptions:write",
    "POST /v1/subscriptions/{subscription_id}/renew": "subscriptions:write",
    "POST /v1/subscriptions/{subscription_id}/cancel": "subscriptions:write",
    "GET /v1/subscriptions/{subscription_id}": "subscriptions:read",
}
_GUARDS = {
    "jwt": (
        guard_from(AuthMode.JWT, issuer="i", audience="a", jwks_url="http://127.0.0.1:9/k"),
        "bearer",
        {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    ),
    "api-keys": (
        guard_from(AuthMode.API_KEYS, api_keys=api_keys_json([new_api_key("c", ["x"])[1]])),
        "apiKey",
        {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    ),
}


@pytest.mark.parametrize("mode", list(_GUARDS))
def test_every_operation_declares_its_scheme_scope_and_refusals(mode: str) -> None:
    guard, scheme, declared = _GUARDS[mode]
    operations: dict[str, dict[str, Any]] = {}
    for document in (app.openapi() for app in _apps(guard).values()):
        assert document["components"]["securitySchemes"][scheme].items() >= declared.items()
        for path, methods in document["paths"].items():
            for method, operation in methods.items():
                operations[f"{method.upper()} {path}"] = operation
    for where, operation in operations.items():
        if where in SCOPES:
            assert operation["security"] == [{scheme: [SCOPES[where]]}], where
            assert {"401", "403"} <= operation["responses"].keys(), where
        else:  # the probes and /metrics: never behind credentials
            assert "security" not in operation, where
    assert set(SCOPES) <= operations.keys()


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                where = f"{method.upper()} {path}"
                if "example" in media:
                    yield where, media["schema"], media["example"]
                for name, example in media.get("examples", {}).items():
                    yield f"{where} ({name})", media["schema"], example["value"]


@pytest.mark.parametrize("name", ["video-service", "subscription"])
def test_every_request_example_validates_against_its_schema(name: str) -> None:
    document = _apps()[name].openapi()
    examples = list(_examples(document))
    assert examples, f"{name} shows no request example"
    for where, schema, example in examples:
        # `#/components/...` references resolve against the document's own components.
        root = {**schema, "components": document.get("components", {})}
        errors = [e.message for e in Draft202012Validator(root).iter_errors(example)]
        assert not errors, f"{where}: {errors}"


def _bare_fields(node: Any, where: str) -> Iterator[str]:
    """Every property, in every schema of the document, that has no description."""
    if isinstance(node, dict):
        for field, spec in node.get("properties", {}).items():
            if isinstance(spec, dict) and not spec.get("description"):
                yield f"{where}.{field}"
        for key, value in node.items():
            yield from _bare_fields(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _bare_fields(value, f"{where}[{index}]")


@pytest.mark.parametrize("name", ["video-service", "subscription"])
def test_every_field_of_every_body_is_described(name: str) -> None:
    # Clients are generated from the document: an undescribed field is one they must guess.
    document = _apps()[name].openapi()
    fastapi_own = {"HTTPValidationError", "ValidationError"}  # FastAPI's, not Tide's
    schemas = document.get("components", {}).get("schemas", {})
    document["components"]["schemas"] = {
        key: value for key, value in schemas.items() if key not in fastapi_own
    }
    bare = list(_bare_fields(document, ""))
    assert not bare, f"{name}: fields without a description: {bare}"


@pytest.mark.parametrize("name", ["video-service", "subscription"])
def test_every_503_declares_retry_after(name: str) -> None:
    document = _apps()[name].openapi()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "503" in operation["responses"]
        and "Retry-After" not in operation["responses"]["503"].get("headers", {})
    ]
    assert not missing, f"503 without Retry-After: {missing}"
