"""The catalog's RabbitMQ topology as a definitions document (`rabbitmqctl import_definitions`).

The same document is loaded by the cluster on Kubernetes (`load_definitions`)
and imported into the test harness's node, so both run the same topology.
Dead-lettering and the delivery limit are set by policy, not queue arguments,
because a queue's arguments can never change after it is declared.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tide.topology import Catalog

VHOST = "/"
POLICY_PRIORITY = 10
EVERYTHING = ".*"
NOTHING = ""  # RabbitMQ's empty pattern matches no resource, not even the default exchange


@dataclass(frozen=True)
class Permissions:
    """A user's RabbitMQ permissions in the vhost: patterns over exchange and queue names."""

    configure: str
    write: str
    read: str


ADMINISTRATOR = Permissions(configure=EVERYTHING, write=EVERYTHING, read=EVERYTHING)


def service_permissions(catalog: Catalog, service: str) -> Permissions:
    """What a service's code does on RabbitMQ and nothing more. It publishes to the exchanges
    the catalog says it publishes to (write) and consumes its queue workers' queues (read).
    It configures nothing: the topology is loaded from these definitions, a passive declare
    needs no permission, and the broker itself dead-letters what a worker rejects. LookupError
    for a name that is not a catalog service."""
    publishes = catalog.service(service).publishes_to_exchanges
    consumes = (worker.queue for worker in catalog.workers_of(service))
    return Permissions(configure=NOTHING, write=_exactly(publishes), read=_exactly(consumes))


def _exactly(names: Iterable[str]) -> str:
    """A pattern that matches these names and no other (NOTHING for none)."""
    names = sorted(names)
    return f"^(?:{'|'.join(map(re.escape, names))})$" if names else NOTHING


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
    """The topology (exchanges, quorum queues, DLQs, policies) plus `users` (catalog service
    name -> password, with `service_permissions`) and `administrators` (every right, the
    management UI)."""
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
                "pattern": _exactly([queue.name]),
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
    accounts = [
        (name, password, service_permissions(catalog, name), False)
        for name, password in sorted((users or {}).items())
    ]
    accounts += [
        (name, password, ADMINISTRATOR, True)
        for name, password in sorted((administrators or {}).items())
    ]
    if accounts:
        document["users"] = [
            {
                "name": name,
                "password_hash": password_hash(password, _stable_salt(name, password)),
                "tags": ["administrator"] if admin else [],
            }
            for name, password, _permissions, admin in accounts
        ]
        document["permissions"] = [
            {
                "user": name,
                "vhost": VHOST,
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            }
            for name, _password, permissions, _admin in accounts
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
