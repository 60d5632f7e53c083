"""Every password the platform needs, derived from one per-stack secret seed.

A keyed hash (HMAC-SHA256) of the seed and the credential's purpose gives each
credential: stable from run to run, different for every purpose, and needing no
provider beside Kubernetes (a generated-password provider would be one more
plugin to install, and it keeps each password in the state anyway). The seed is
a Pulumi secret (`tide:credentialSeed`); `make up` sets it once. Rotating the
seed rotates every credential at the next `pulumi up`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pulumi

SEED_KEY = "credentialSeed"
# A seed shorter than this is guessable; `make up` makes 32 random bytes (64 hex digits).
MIN_SEED_LENGTH = 32
# 32 characters of base64url without padding: 192 bits, and nothing a URL or DSN must escape.
PASSWORD_LENGTH = 32


def derive(seed: str, purpose: str) -> str:
    """The password for `purpose`: letters, digits, '-' and '_' only."""
    if len(seed) < MIN_SEED_LENGTH:
        raise ValueError(
            f"tide:{SEED_KEY} is {len(seed)} characters long; it needs at least {MIN_SEED_LENGTH}"
        )
    digest = hmac.new(seed.encode(), f"tide/{purpose}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:PASSWORD_LENGTH]


class Credentials:
    """Hands out derived passwords as Pulumi secrets; one instance per program run."""

    def __init__(self, seed: pulumi.Output[str]) -> None:
        self._seed = seed

    @classmethod
    def from_stack_config(cls) -> Credentials:
        seed = pulumi.Config("tide").get_secret(SEED_KEY)
        if seed is None:
            raise pulumi.RunError(
                f"tide:{SEED_KEY} is not set: every password is derived from it. Set it once "
                f'with `pulumi config set --secret tide:{SEED_KEY} "$(openssl rand -hex 32)"` '
                "(make up does this for the kind stack)"
            )
        return cls(seed)

    def password(self, purpose: str) -> pulumi.Output[str]:
        return pulumi.Output.secret(self._seed.apply(lambda seed: derive(seed, purpose)))
