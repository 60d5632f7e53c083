"""The status that upstream operators write, written here where the operator cannot run.

Strimzi's operator is Java and cannot be had here; CloudNativePG's and the
RabbitMQ operator's pods would run on KWOK nodes, where no instance ever
answers them. Tide's program waits on their status (`pulumi.com/waitFor`), so
the engine tier plays that part: each object gets the status its operator
writes once it is reconciled, in the shape of that operator's API types at
the version Tide pins (Strimzi 0.48 `io.strimzi.api.kafka.model.*.status`,
CloudNativePG 1.27 `api/v1` ClusterStatus and DatabaseStatus, RabbitMQ
cluster operator 2.16 `api/v1beta1` RabbitmqClusterStatus), with
`observedGeneration` following `metadata.generation` as theirs do. The Topic
Operator's finalizer is added and cleared on deletion, as Strimzi's is.
A Service of type LoadBalancer gets an ingress address from a documentation
range, as a cloud's load-balancer controller would give one.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from tests.harness.addresses import LOAD_BALANCER_IP

TOPIC_FINALIZER = "strimzi.io/topic-operator"
STRIMZI_VERSION = "0.48.0"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(kind: str = "Ready", reason: str | None = None, message: str = "") -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "lastTransitionTime": _now()}
    if reason is not None:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _kafka_status(kafka: dict[str, Any]) -> dict[str, Any]:
    namespace, name = kafka["metadata"]["namespace"], kafka["metadata"]["name"]
    listeners = []
    for listener in kafka["spec"]["kafka"]["listeners"]:
        if listener["type"] == "nodeport":
            port = listener["configuration"]["bootstrap"]["nodePort"]
            host = "localhost"
        else:
            host, port = f"{name}-kafka-bootstrap.{namespace}.svc", listener["port"]
        listeners.append(
            {
                "name": listener["name"],
                "addresses": [{"host": host, "port": port}],
                "bootstrapServers": f"{host}:{port}",
            }
        )
    return {
        "conditions": [_ready()],
        "listeners": listeners,
        "kafkaVersion": kafka["spec"]["kafka"].get("version"),
        "kafkaMetadataState": "KRaft",
        "clusterId": uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{name}").hex[:22],
        "operatorLastSuccessfulVersion": STRIMZI_VERSION,
    }


def _node_pool_status(pool: dict[str, Any]) -> dict[str, Any]:
    replicas = pool["spec"]["replicas"]
    return {
        "conditions": [],
        "nodeIds": list(range(replicas)),
        "replicas": replicas,
        "roles": pool["spec"]["roles"],
    }


def _topic_status(topic: dict[str, Any]) -> dict[str, Any]:
    name = topic["spec"].get("topicName") or topic["metadata"]["name"]
    return {"conditions": [_ready()], "topicName": name, "topicId": uuid.uuid4().hex[:22]}


def _user_status(user: dict[str, Any]) -> dict[str, Any]:
    name = user["metadata"]["name"]
    return {"conditions": [_ready()], "username": name, "secret": name}


def _postgres_status(cluster: dict[str, Any]) -> dict[str, Any]:
    name, instances = cluster["metadata"]["name"], cluster["spec"]["instances"]
    return {
        # metav1.Condition: reason and message are required.
        "conditions": [_ready(reason="ClusterIsReady", message="Cluster is Ready")],
        "phase": "Cluster in healthy state",
        "instances": instances,
        "readyInstances": instances,
        "currentPrimary": f"{name}-1",
        "writeService": f"{name}-rw",
        "readService": f"{name}-r",
    }


def _database_status(_database: dict[str, Any]) -> dict[str, Any]:
    return {"applied": True}


def _rabbitmq_status(_cluster: dict[str, Any]) -> dict[str, Any]:
    return {
        "conditions": [
            _ready("AllReplicasReady", "AllPodsAreReady"),
            _ready("ClusterAvailable", "AtLeastOneEndpointAvailable"),
            _ready("NoWarnings", "NoWarnings"),
            _ready("ReconcileSuccess", "Success"),
        ]
    }


@dataclass(frozen=True)
class Played:
    """One kind whose operator is played: how its reconciled status looks."""

    group: str
    version: str
    plural: str
    status: Callable[[dict[str, Any]], dict[str, Any]]
    finalizer: str | None = None
    # Namespaces where the real operator reconciles this kind, so it is not played there.
    left: tuple[str, ...] = ()
    # What the operator does with an object before it reports it reconciled, where the
    # harness does it too (tests/harness/served_brokers.py); a failure is retried.
    provision: Callable[[dict[str, Any]], None] | None = None

    def leave(self, *namespaces: str) -> Played:
        """This kind, played everywhere but in `namespaces`."""
        return replace(self, left=self.left + namespaces)


STRIMZI = (
    Played("kafka.strimzi.io", "v1beta2", "kafkas", _kafka_status),
    Played("kafka.strimzi.io", "v1beta2", "kafkanodepools", _node_pool_status),
    Played("kafka.strimzi.io", "v1beta2", "kafkatopics", _topic_status, TOPIC_FINALIZER),
    Played("kafka.strimzi.io", "v1beta2", "kafkausers", _user_status),
)
CLOUDNATIVE_PG = (
    Played("postgresql.cnpg.io", "v1", "clusters", _postgres_status),
    Played("postgresql.cnpg.io", "v1", "databases", _database_status),
)
RABBITMQ = (Played("rabbitmq.com", "v1beta1", "rabbitmqclusters", _rabbitmq_status),)


class PlayedOperators:
    """A thread that reconciles the played kinds' status until stopped."""

    def __init__(
        self, kubeconfig: Path, played: tuple[Played, ...], *, load_balancers: bool = True
    ) -> None:
        api = kube_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.played = played
        self.load_balancers = load_balancers
        # Each distinct failure once: the loop retries every half second.
        self.errors: list[str] = []
        # The last failure of each object's provisioning, until it succeeds: a broker
        # may refuse while it starts, and the operator it plays retries too.
        self.retrying: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="played-operators", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        # Polling, not watching: a watch would add reconnect logic for the same outcome, and
        # half a second is far inside every wait Tide's program sets.
        while not self._stop.wait(0.5):
            for kind in self.played:
                self._reconcile(kind)
            if self.load_balancers:
                self._assign_load_balancers()

    def _reconcile(self, kind: Played) -> None:
        try:
            listed: dict[str, Any] = self.custom.list_cluster_custom_object(  # type: ignore[assignment]
                kind.group, kind.version, kind.plural
            )
        except ApiException as exc:
            if exc.status != 404:  # 404: the CRD is not installed (yet); nothing to play
                self._failed(f"list {kind.plural}: {exc.status} {exc.reason}")
            return
        for item in listed["items"]:
            if item["metadata"]["namespace"] in kind.left:
                continue
            try:
                self._reconcile_one(kind, item)
            except ApiException as exc:
                if exc.status not in (404, 409):  # gone, or changed under us: next round
                    self._failed(f"{kind.plural} {item['metadata']['name']}: {exc.body}")

    def _failed(self, error: str) -> None:
        if error not in self.errors:
            self.errors.append(error)

    def _reconcile_one(self, kind: Played, item: dict[str, Any]) -> None:
        metadata = item["metadata"]
        args = (kind.group, kind.version, metadata["namespace"], kind.plural, metadata["name"])
        finalizers = metadata.get("finalizers") or []
        if metadata.get("deletionTimestamp"):
            if kind.finalizer in finalizers:
                kept = [f for f in finalizers if f != kind.finalizer]
                try:
                    self.custom.patch_namespaced_custom_object(
                        *args, {"metadata": {"finalizers": kept or None}}
                    )
                except ApiException as exc:
                    # The garbage collector took its own finalizer (foregroundDeletion) off
                    # since the listing, and this patch would put it back: the server
                    # refuses; the next round patches the list as it is then.
                    if exc.status != 422:
                        raise
            return
        if kind.finalizer is not None and kind.finalizer not in finalizers:
            self.custom.patch_namespaced_custom_object(
                *args, {"metadata": {"finalizers": [*finalizers, kind.finalizer]}}
            )
        generation = metadata.get("generation", 1)
        if (item.get("status") or {}).get("observedGeneration") == generation:
            return
        if kind.provision is not None:
            key = f"{kind.plural}/{metadata['namespace']}/{metadata['name']}"
            try:
                kind.provision(item)
            except Exception as exc:  # noqa: BLE001 (any failure is retried, and kept to show)
                self.retrying[key] = f"{type(exc).__name__}: {exc}"
                return
            self.retrying.pop(key, None)
        status = kind.status(item) | {"observedGeneration": generation}
        self.custom.patch_namespaced_custom_object_status(*args, {"status": status})

    def _assign_load_balancers(self) -> None:
        with contextlib.suppress(ApiException):
            for listed in self.core.list_service_for_all_namespaces().items:
                service: dict[str, Any] = listed.to_dict()
                ingress = ((service["status"] or {}).get("load_balancer") or {}).get("ingress")
                if service["spec"]["type"] != "LoadBalancer" or ingress:
                    continue
                self.core.patch_namespaced_service_status(
                    str(service["metadata"]["name"]),
                    str(service["metadata"]["namespace"]),
                    {"status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}},
                )
