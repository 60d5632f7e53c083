"""Who may call the APIs on a stack: the API keys' Secret, and what each API is told.

Under `api-keys` the Secret holds each client's key as its SHA-256 only (tide.auth). A
client's key is either made elsewhere (`tide auth new-key`, given by its hash) or derived
from tide:credentialSeed, then handed out once as the `apiKeys` stack output (a secret).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.base import PlatformComponent
from infra.config import Auth
from infra.credentials import Credentials
from tide.auth import API_KEY_PREFIX, ApiKey, api_keys_json, hash_key, jwt_settings

API_KEYS_SECRET = "tide-api-keys"  # noqa: S105 - a Secret's name
API_KEYS_KEY = "keys.json"


def api_key_purpose(client: str) -> str:
    """The purpose a client's derived key is made for (infra.credentials.derive)."""
    return f"api-key/{client}"


def derived_api_key(password: str) -> str:
    """A client's key, from the password derived for its purpose."""
    return API_KEY_PREFIX + password


def auth_env(auth: Auth) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """An API's TIDE_AUTH_* variables: plain, and from the keys' Secret."""
    if auth.mode == "jwt":
        # Auth refuses jwt without any of the three.
        settings = jwt_settings(
            issuer=auth.issuer or "",
            audience=auth.audience or "",
            jwks_url=auth.jwks_url or "",
            token_types=auth.token_types,
        )
        return settings, {}
    keys = {"secret": API_KEYS_SECRET, "key": API_KEYS_KEY}
    return {"TIDE_AUTH_MODE": auth.mode}, {"TIDE_AUTH_API_KEYS": keys}


@dataclass(frozen=True, kw_only=True)
class ApiKeysArgs:
    namespace: str
    auth: Auth
    credentials: Credentials


class ApiKeys(PlatformComponent):
    """The Secret of hashed keys the APIs read, and the derived keys themselves."""

    keys: pulumi.Output[dict[str, str]]
    """Each derived client key by client name (a secret): what a client sends."""

    def __init__(
        self, name: str, args: ApiKeysArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("tide:auth:ApiKeys", name, opts)
        derived = {
            client.name: args.credentials.password(api_key_purpose(client.name)).apply(
                derived_api_key
            )
            for client in args.auth.clients
            if client.sha256 is None
        }
        # Output.all with no arguments gives a list: every client may bring its own key.
        everyone = pulumi.Output.all(**derived) if derived else pulumi.Output.from_input({})
        self.keys = pulumi.Output.secret(everyone)

        def entries(keys: dict[str, str]) -> str:
            return api_keys_json(
                [
                    ApiKey(
                        name=client.name,
                        sha256=client.sha256 or hash_key(keys[client.name]),
                        scopes=client.scopes,
                    )
                    for client in args.auth.clients
                ]
            )

        stored = self.keys.apply(entries)
        self.secret = k8s.core.v1.Secret(
            name,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=API_KEYS_SECRET, namespace=args.namespace),
            string_data={API_KEYS_KEY: stored},
            opts=self.child(),
        )
        # The APIs read the keys at start: a changed list rolls them (a revoked key stops
        # working at `pulumi up`). A digest of hashes only, so no secret.
        self.checksum: pulumi.Output[str] = pulumi.Output.unsecret(
            stored.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
        )
        self.register_outputs({})
