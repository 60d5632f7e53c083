"""The RabbitMQ cluster operator reconciles the kind stack's `RabbitmqCluster`, and what it
makes is what Tide uses.

The operator (built from its module, `tests/harness/rabbitmq_operator.py`) watches the
operated stack's data namespace from before `pulumi up`; `pulumi up` returned only once the
operator had set `AllReplicasReady` from the StatefulSet it made, whose pods KWOK runs.
Every check reads the objects the operator made, not the names Tide asked for: the
definitions the StatefulSet mounts, the configuration RabbitMQ reads them by, the default
user's Secret it projects into conf.d, and the Services and pod ports Tide dials.
"""

from __future__ import annotations

import asyncio
import base64
import json
import posixpath
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from infra.components.rabbitmq import CLUSTER_NAME, rabbitmq_credentials_secret

from ott.catalog import CATALOG
from tests.deploy.apiserver import ApiServer
from tests.engine.conftest import Deployed
from tests.harness.rabbitmq_operator import RabbitMQOperator
from tests.reports import ENGINE, report
from tide_dev.brokers import broker_dir
from tide_dev.errors import HarnessError
from tide_dev.rabbitmq import RabbitMQServer

pytestmark = pytest.mark.timeout(600)
CONF_D = "/etc/rabbitmq/conf.d/"
# The files of conf.d that hold users and definitions. 10-operatorDefaults.conf configures
# clustering through the Kubernetes API (peer discovery), which a node here cannot do.
USERS_AND_DEFINITIONS = ("11-default_user.conf", "90-userDefinedConfiguration.conf")


def _get(api: ApiServer, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
    document = api.get({"apiVersion": api_version, "kind": kind,
                        "metadata": {"name": name, "namespace": namespace}})  # fmt: skip
    assert document is not None, f"{kind} {namespace}/{name} does not exist"
    return document


def _data(document: dict[str, Any]) -> dict[str, str]:
    """A ConfigMap's or Secret's content, decoded."""
    if document["kind"] == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (document.get("data") or {}).items()}
    return dict(document.get("data") or {})


def _settings(conf: str) -> dict[str, str]:
    """The `key = value` lines of a rabbitmq.conf file (the operator aligns the `=`)."""
    pairs = (line.split("=", 1) for line in conf.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def _made_by_operator(api: ApiServer, namespace: str) -> dict[str, list[str]]:
    """Kind -> names of the objects whose controller is Tide's RabbitmqCluster."""
    cluster = _get(api, "rabbitmq.com/v1beta1", "RabbitmqCluster", namespace, CLUSTER_NAME)
    kinds = [("v1", "Service"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount"),
             ("apps/v1", "StatefulSet"), ("rbac.authorization.k8s.io/v1", "Role"),
             ("rbac.authorization.k8s.io/v1", "RoleBinding")]  # fmt: skip
    made: dict[str, list[str]] = {}
    for api_version, kind in kinds:
        resource = api.client.resources.get(api_version=api_version, kind=kind)
        for item in resource.get(namespace=namespace).items:
            owners = item.metadata.ownerReferences or []
            if any(o.uid == cluster["metadata"]["uid"] and o.controller for o in owners):
                made.setdefault(kind, []).append(item.metadata.name)
    return made


def _server(api: ApiServer, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The StatefulSet the operator made, and its `rabbitmq` container."""
    statefulset = _get(api, "apps/v1", "StatefulSet", namespace, f"{CLUSTER_NAME}-server")
    spec = statefulset["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "rabbitmq"]
    return statefulset, container


def _mounted_files(api: ApiServer, namespace: str) -> dict[str, str]:
    """Path in the rabbitmq container -> content, for every file it mounts from a
    ConfigMap or Secret, resolved through the StatefulSet's volumes as the kubelet does."""
    statefulset, container = _server(api, namespace)
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        # (source kind, name, items) for a plain ConfigMap/Secret volume or each projection.
        sources = list(volume.get("projected", {}).get("sources", []))
        sources += [{"secret": volume["secret"]}] if "secret" in volume else []
        sources += [{"configMap": volume["configMap"]}] if "configMap" in volume else []
        in_volume: dict[str, str] = {}
        for source in sources:
            for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if key not in source:
                    continue
                ref = source[key]
                name = ref.get("name") or ref.get("secretName")
                keys = _data(_get(api, "v1", kind, namespace, name))
                items = ref.get("items") or [{"key": k, "path": k} for k in keys]
                in_volume.update({item["path"]: keys[item["key"]] for item in items})
        if sub_path := mount.get("subPath"):
            if sub_path in in_volume:
                files[mount["mountPath"]] = in_volume[sub_path]
        else:
            for path, content in in_volume.items():
                files[posixpath.join(mount["mountPath"], path)] = content
    return files


def test_the_operator_makes_tides_cluster_ready(
    operated_stack: Deployed, cluster_api: ApiServer, rabbitmq_operator: RabbitMQOperator
) -> None:
    cluster = _get(cluster_api, "rabbitmq.com/v1beta1", "RabbitmqCluster", operated_stack.data,
                   CLUSTER_NAME)  # fmt: skip
    conditions = {c["type"]: c for c in (cluster.get("status") or {}).get("conditions", [])}
    log = rabbitmq_operator.log.read_text(errors="replace").splitlines()[-20:]
    assert conditions.get("AllReplicasReady", {}).get("status") == "True", (
        f"conditions: {conditions}\n" + "\n".join(log)
    )
    # Every condition is the operator's own, and only the one that needs `kubectl exec` into
    # a pod (which KWOK cannot serve) is not True. NoWarnings is False when the pods' memory
    # request and limit differ.
    failing = {t: c.get("message") for t, c in conditions.items() if c["status"] != "True"}
    assert set(failing) <= {"ReconcileSuccess"}, f"conditions not True: {failing}"
    if "ReconcileSuccess" in failing:
        assert conditions["ReconcileSuccess"]["reason"] == "FailedCLICommand", failing
    made = _made_by_operator(cluster_api, operated_stack.data)
    objects = "; ".join(
        f"{kind} {', '.join(sorted(names))}" for kind, names in sorted(made.items())
    )
    states = ", ".join(
        f"{kind}={c['status']}" + (f" ({c.get('message')})" if c["status"] != "True" else "")
        for kind, c in sorted(conditions.items())
    )
    report(ENGINE, f"RabbitMQ cluster operator made: {objects}; conditions {states}")
    assert made.get("StatefulSet") == [f"{CLUSTER_NAME}-server"]
    # Tide gives the operator its default user's Secret: the operator makes none of its own,
    # whose user would not exist once definitions are loaded at boot.
    assert f"{CLUSTER_NAME}-default-user" not in made.get("Secret", [])


def test_the_statefulset_mounts_tides_definitions_where_rabbitmq_loads_them(
    operated_stack: Deployed, cluster_api: ApiServer
) -> None:
    files = _mounted_files(cluster_api, operated_stack.data)
    settings = _settings(files[CONF_D + "90-userDefinedConfiguration.conf"])
    assert "load_definitions" in settings, "RabbitMQ is not told to load definitions"
    path = settings["load_definitions"]
    assert path in files, f"load_definitions names {path}, which the container does not mount"
    definitions = json.loads(files[path])
    queues = {q["name"] for q in definitions["queues"]}
    expected = {q.name for q in CATALOG.queues}
    assert expected <= queues, f"the mounted definitions lack queues {expected - queues}"


def test_every_address_tide_dials_is_the_operators(
    operated_stack: Deployed, cluster_api: ApiServer
) -> None:
    data, apps = operated_stack.data, operated_stack.apps
    made = _made_by_operator(cluster_api, data)
    dialled = set()
    for service in CATALOG.services:
        if not CATALOG.uses_rabbitmq(service.name):
            continue
        secret = _get(cluster_api, "v1", "Secret", apps, rabbitmq_credentials_secret(service.name))
        url = urlsplit(_data(secret)["url"])
        assert url.hostname is not None, f"{service.name}'s URL names no host"
        name, namespace, _ = url.hostname.split(".", 2)
        assert namespace == data, f"{service.name} dials {url.hostname}"
        ports = {p["port"] for p in _get(cluster_api, "v1", "Service", data, name)["spec"]["ports"]}
        assert name in made["Service"], f"{service.name} dials {name}, not the operator's Service"
        assert url.port in ports, f"{service.name} dials port {url.port}; {name} has {ports}"
        dialled.add(name)
    assert dialled, "no service dials RabbitMQ"
    # Prometheus scrapes the operator's pods by Tide's PodMonitor.
    monitor = _get(cluster_api, "monitoring.coreos.com/v1", "PodMonitor", data, "tide-rabbitmq")
    statefulset, container = _server(cluster_api, data)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), f"PodMonitor selects {selector}; pods have {labels}"
    ports = {p.get("name") for p in container["ports"]}
    endpoints = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert endpoints <= ports, f"PodMonitor scrapes ports {endpoints}; the pods name {ports}"


def test_the_operators_default_user_logs_in(
    operated_stack: Deployed, cluster_api: ApiServer
) -> None:
    """A node booted from the users and definitions the operator's pod would read logs in
    the default user of the Secret the StatefulSet projects, with administrator rights."""
    files = _mounted_files(cluster_api, operated_stack.data)
    conf_d = {name: files[CONF_D + name] for name in USERS_AND_DEFINITIONS}
    default_user = _settings(conf_d["11-default_user.conf"])
    # The node runs as `rabbitmq`: its directory is one it can traverse. The mounted files
    # are written there; only their directory in load_definitions changes.
    root = broker_dir()
    local = root / "mounted"
    local.mkdir()
    local.chmod(0o755)
    rewritten = conf_d["90-userDefinedConfiguration.conf"]
    for path, content in files.items():
        if not path.startswith("/etc/rabbitmq/") and path in rewritten:
            target = local / posixpath.basename(path)
            target.write_text(content)
            target.chmod(0o644)
            rewritten = rewritten.replace(path, str(target))
    conf_d["90-userDefinedConfiguration.conf"] = rewritten
    login = (default_user["default_user"], default_user["default_pass"])
    server = RabbitMQServer(root / "rabbitmq", conf_d=conf_d, login=login)
    try:
        server.start()  # waits until `login` opens a connection
    except HarnessError as exc:
        server.close()
        pytest.fail(f"the operator's default user {login[0]} cannot log in: {exc}")
    try:

        async def declare() -> str:
            connection = await aio_pika.connect(server.url, timeout=30)
            try:
                channel = await connection.channel()
                # An administrator may declare (the services' users may not).
                return (await channel.declare_queue(exclusive=True)).name
            finally:
                await connection.close()

        assert asyncio.run(declare())
    finally:
        server.close()
