"""The catalog's RabbitMQ topology as a definitions document (`rabbitmqctl import_definitions`).

The same document is loaded by the cluster on Kubernetes (`load_definitions`)
and imported into the test harness's node, so both run the same topology.
Dead-lettering and the delivery limit are set by policy, not queue arguments,
because a queue's arguments can never change after it is declared.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from tide.topology import Catalog

VHOST = "/"
POLICY_PRIORITY = 10


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def definitions(
    catalog: Catalog,
    users: Mapping[str, str] | None = None,
    administrators: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The topology (exchanges, quorum queues, DLQs, policies) plus `users` (name ->
    password: publish and consume, declare nothing) and `administrators` (every right,
    the management UI)."""
    exchanges: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    policies: list[dict[str, Any]] = []
    for exchange in catalog.exchanges:
        exchanges.append(_exchange(exchange.name, exchange.type))
    for queue in catalog.queues:
        queues.append(_quorum_queue(queue.name))
        queues.append(_quorum_queue(queue.dlq))
        exchanges.append(_exchange(queue.dead_letter_exchange, "fanout"))
        bindings.append(_binding(queue.dead_letter_exchange, queue.dlq, ""))
        policies.append(
            {
                "vhost": VHOST,
                "name": f"{queue.name}-dead-letters",
                "pattern": f"^{_escape(queue.name)}$",
                "apply-to": "queues",
                "priority": POLICY_PRIORITY,
                "definition": {
                    "dead-letter-exchange": queue.dead_letter_exchange,
                    "delivery-limit": queue.delivery_limit,
                },
            }
        )
    for binding in catalog.bindings:
        bindings.append(_binding(binding.exchange, binding.queue, binding.routing_key))
    document: dict[str, Any] = {
        "vhosts": [{"name": VHOST}],
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
        "policies": policies,
    }
    accounts = [(name, password, False) for name, password in sorted((users or {}).items())]
    accounts += [
        (name, password, True) for name, password in sorted((administrators or {}).items())
    ]
    if accounts:
        document["users"] = [
            {
                "name": name,
                "password_hash": password_hash(password, _stable_salt(name, password)),
                "tags": ["administrator"] if admin else [],
            }
            for name, password, admin in accounts
        ]
        document["permissions"] = [
            {
                "user": name,
                "vhost": VHOST,
                "configure": ".*" if admin else "",
                "write": ".*",
                "read": ".*",
            }
            for name, _password, admin in accounts
        ]
    return document


def _stable_salt(name: str, password: str) -> bytes:
    # A salt derived from the secret keeps the rendered document stable across
    # `pulumi up` runs (no diff, no restart) while still differing per user.
    return hashlib.sha256(f"{name}:{password}".encode()).digest()[:4]


def _exchange(name: str, type_: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": VHOST,
        "type": str(type_),
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


def _quorum_queue(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": VHOST,
        "durable": True,
        "auto_delete": False,
        "arguments": {"x-queue-type": "quorum"},
    }


def _binding(source: str, queue: str, routing_key: str) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": VHOST,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    }


def _escape(name: str) -> str:
    return name.replace(".", "\\.")
