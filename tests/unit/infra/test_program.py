"""Run under mocks for both stacks, the program declares the platform the catalog describes."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from infra import outputs
from infra.components.api_auth import (
    API_KEYS_KEY,
    API_KEYS_SECRET,
    api_key_purpose,
    derived_api_key,
)
from infra.components.catalog import CONFIG_MAP, KEY, catalog_text
from infra.components.kafka_users import OPERATOR
from infra.components.monitoring import RELEASE
from infra.components.rabbitmq import TOPOLOGY_ANNOTATION
from infra.config import ConfigError, parse
from infra.credentials import derive

from ott.catalog import CATALOG
from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import KEYS_AUTH, TEST_SEED, Program, run, stack_config
from tide.auth import hash_key, parse_api_keys
from tide.catalog_file import load_catalog
from tide.store.grants import database_services
from tide.topology import Catalog, Queue, Role, Topic

ORDERS = Path(__file__).parents[3] / "examples" / "orders" / "catalog.yaml"


def _with_catalog(catalog: Catalog, tmp_path: Path) -> dict[str, str]:
    """The kind stack, naming a catalog file that holds `catalog`."""
    path = tmp_path / "catalog.yaml"
    path.write_text(catalog_text(catalog))
    return stack_config("kind") | {"tide:catalog": str(path)}


def test_every_catalog_topic_has_a_kafka_topic_plus_retry_and_dlq_topics(program: Program) -> None:
    declared = {
        t.inputs["metadata"]["name"]: t.inputs["spec"] for t in program.of_type("KafkaTopic")
    }
    for topic in CATALOG.topics:
        assert declared[topic.name]["partitions"] == topic.partitions
        assert declared[topic.name]["config"]["retention.ms"] == str(topic.retention_ms)
    for group in CATALOG.consumer_groups:
        for name in (*group.retry_topics, group.dlq_topic):
            assert name in declared, f"{group.name}: {name} missing"
    assert len(declared) == len(CATALOG.topics) + sum(
        len(g.retry.delays_s) + 1 for g in CATALOG.consumer_groups
    )


def test_topics_wait_for_the_kafka_cluster_which_waits_for_the_operator(program: Program) -> None:
    for topic in program.of_type("KafkaTopic"):
        assert "kafka" in program.waits_for(topic)
    for kind in ("v1beta2:Kafka", "KafkaNodePool"):
        (resource,) = program.of_type(kind)
        assert "strimzi" in program.waits_for(resource), kind


def test_every_custom_resource_waits_for_its_operator(program: Program) -> None:
    operator_of = {
        "KafkaUser": "kafka",
        "RabbitmqCluster": "rabbitmq-operator",
        "postgresql.cnpg.io/v1:Cluster": "postgres-operator",
        "PodMonitor": "tide-monitoring",
        "PrometheusRule": "tide-monitoring",
    }
    for kind, operator in operator_of.items():
        resources = program.of_type(kind)
        assert resources, kind
        for resource in resources:
            assert operator in program.waits_for(resource), f"{kind} {resource.name}"
    # ScaledObjects come with each service's chart, which waits for KEDA.
    for service in CATALOG.services:
        chart = program.named("helm.sh/v4:Chart", service.name)
        assert "keda" in program.waits_for(chart)


def test_each_kafka_client_has_a_user_with_exactly_its_topics_and_group(program: Program) -> None:
    users = {u.inputs["metadata"]["name"]: u.inputs["spec"] for u in program.of_type("KafkaUser")}
    operator = users.pop(OPERATOR)
    operator_grants = {
        (acl["resource"]["type"], acl["resource"].get("name"), op)
        for acl in operator["authorization"]["acls"]
        for op in acl["operations"]
    }
    # The operator reads and redrives anything, but cannot create, delete or alter.
    assert ("topic", "*", "Write") in operator_grants
    assert ("group", "*", "Read") in operator_grants
    assert not {op for _k, _n, op in operator_grants} & {"Create", "Delete", "Alter", "All"}
    assert set(users) == {
        "video-service",
        "subscription",
        "recommendation",
        "personalization",
        "analytics",
        "badges",
        "notification-dispatch",
    }
    for name, spec in users.items():
        assert spec["authentication"]["type"] == "scram-sha-512"
        granted = {
            (acl["resource"]["type"], acl["resource"]["name"], op)
            for acl in spec["authorization"]["acls"]
            for op in acl["operations"]
        }
        expected = {("topic", t, "Write") for t in CATALOG.service(name).produces}
        for group in CATALOG.groups_of(name):
            expected |= {("group", group.name, "Read")}
            expected |= {("topic", t, "Read") for t in (*group.topics, *group.retry_topics)}
            expected |= {("topic", t, "Write") for t in (*group.retry_topics, group.dlq_topic)}
        without_describe = {g for g in granted if g[2] != "Describe"}
        assert without_describe == expected, name
        # Describe goes exactly with the resources granted something else.
        described = {(k, n) for k, n, op in granted if op == "Describe"}
        assert described == {(k, n) for k, n, _ in expected}, name


def test_kafka_credentials_live_in_the_services_namespace(program: Program) -> None:
    secrets = {
        s.inputs["metadata"]["name"]: s.inputs
        for s in program.of_type("core/v1:Secret")
        if s.inputs["metadata"]["name"].endswith("-kafka")
    }
    for user in program.of_type("KafkaUser"):
        ref = user.inputs["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        secret = secrets[ref["name"]]
        assert (
            secret["metadata"]["namespace"] == user.inputs["metadata"]["namespace"] == "tide-apps"
        )
        assert secret["stringData"]["username"] == user.inputs["metadata"]["name"]
    for secret in program.of_type("core/v1:Secret"):
        # Generated passwords stay Pulumi secrets all the way into the state.
        assert "stringData" in secret.secret_inputs, secret.name


def test_every_group_has_a_lag_and_a_dlq_alert(program: Program) -> None:
    (rule,) = program.of_type("PrometheusRule")
    alerts = Counter(
        (r["alert"], r["labels"].get("consumergroup"))
        for group in rule.inputs["spec"]["groups"]
        for r in group["rules"]
    )
    for group in CATALOG.consumer_groups:
        assert alerts[("TideConsumerGroupLagHigh", group.name)] == 1
        assert alerts[("TideDeadLettersGrowing", group.name)] == 1
        assert alerts[("TideConsumerGroupNoMembers", group.name)] == 1


def test_cloud_stack_is_replicated_and_protected(cloud: Program) -> None:
    (pool,) = cloud.of_type("KafkaNodePool")
    assert pool.inputs["spec"]["replicas"] >= 3
    (kafka,) = cloud.of_type("v1beta2:Kafka")
    config = kafka.inputs["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert all(listener["tls"] for listener in kafka.inputs["spec"]["kafka"]["listeners"])
    for topic in cloud.of_type("KafkaTopic"):
        assert topic.inputs["spec"]["replicas"] == 3
        assert topic.inputs["spec"]["config"]["min.insync.replicas"] == "2"
    for service in CATALOG.services:
        values = cloud.named("helm.sh/v4:Chart", service.name).inputs["values"]
        assert values["podDisruptionBudget"]["enabled"] is True


def test_kind_stack_is_small_and_reachable_from_the_host(kind: Program) -> None:
    (pool,) = kind.of_type("KafkaNodePool")
    assert pool.inputs["spec"]["replicas"] == 1
    (kafka,) = kind.of_type("v1beta2:Kafka")
    external = [x for x in kafka.inputs["spec"]["kafka"]["listeners"] if x["type"] == "nodeport"]
    assert external, "kind needs a NodePort listener to reach Kafka from the host"
    assert external[0]["configuration"]["bootstrap"]["nodePort"] == 30092
    api = kind.named("helm.sh/v4:Chart", "video-service").inputs["values"]
    assert api["service"] == {"type": "NodePort", "nodePort": 30080}
    assert api["image"]["pullPolicy"] == "Never"


def test_outputs_name_the_endpoints() -> None:
    # The output names are constants so `make up` and the docs never retype them.
    assert {outputs.API_URL, outputs.GRAFANA_URL, outputs.KAFKA_BOOTSTRAP} == {
        "apiUrl",
        "grafanaUrl",
        "kafkaBootstrap",
    }


JWT_AUTH = {"mode": "jwt", "issuer": "https://i/", "audience": "a", "jwksUrl": "https://i/k"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"flavor": "kind", "kafka": {"brokers": 0}},
            "tide:kafka.brokers: Input should be greater",
        ),
        ({"flavor": "kind", "kafka": {"brokerz": 3}}, "tide:kafka.brokerz: Extra inputs are not"),
        ({"flavor": "minikube"}, "tide:flavor: Input should be 'kind' or 'cloud'"),
        (
            {"flavor": "kind", "kafka": {"brokers": 1, "replicationFactor": 3}},
            "replicationFactor 3 needs at least that many brokers",
        ),
        (
            {"flavor": "cloud", "auth": KEYS_AUTH},
            "kafka.brokers must be at least 3 on a cloud stack",
        ),
        ({}, "tide:flavor: Field required"),
        # A stack never deploys APIs that anyone may call.
        ({"flavor": "kind"}, "tide:auth is not set: the APIs would take requests from anyone"),
        ({"flavor": "kind", "auth": {"mode": "none"}}, "tide:auth.mode: Input should be 'jwt'"),
        (
            {"flavor": "kind", "auth": {"mode": "jwt", "issuer": "https://i/", "audience": "a"}},
            "tide:auth: Value error, mode jwt needs jwksUrl",
        ),
        ({"flavor": "kind", "auth": {"mode": "api-keys"}}, "mode api-keys needs at least one"),
        (
            {"flavor": "kind", "auth": {**JWT_AUTH, "tokenTypes": []}},
            "tide:auth.tokenTypes: List should have at least 1 item",
        ),
        (
            {"flavor": "kind", "auth": {**JWT_AUTH, "tokenTypes": ["at+jwt,JWT"]}},
            "tide:auth.tokenTypes.0: String should match pattern",
        ),
        (
            {
                "flavor": "cloud",
                "kafka": {"brokers": 3, "replicationFactor": 3, "minInsyncReplicas": 2},
                "podDisruptionBudgets": True,
                "auth": {
                    "mode": "jwt",
                    "issuer": "https://i/",
                    "audience": "a",
                    "jwksUrl": "http://i/jwks",
                },
            },
            "auth.jwksUrl must be https on a cloud stack",
        ),
        (
            {
                "flavor": "kind",
                "auth": {
                    "mode": "api-keys",
                    "clients": [{"name": "c", "scopes": ["x"], "sha256": "plaintext-key"}],
                },
            },
            "tide:auth.clients.0.sha256: String should match pattern",
        ),
    ],
)
def test_bad_config_names_the_key_and_what_is_allowed(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(values)
    assert message in str(caught.value)


def test_program_stops_on_bad_config_with_the_message() -> None:
    config = stack_config("kind") | {"tide:kafka": '{"brokers": -1}'}
    with pytest.raises(Exception, match=r"tide:kafka\.brokers"):
        run("kind", config)


def test_only_the_player_api_leaves_the_cluster(program: Program) -> None:
    exposed = []
    for chart in program.of_type("helm.sh/v4:Chart"):
        values = chart.inputs.get("values", {})
        if "args" in values:  # a Tide service
            for service in by_kind(render(values), "Service"):
                if service["spec"]["type"] != "ClusterIP":
                    exposed.append(service["metadata"]["name"])
    assert exposed == ["video-service"]
    monitoring = program.named("helm.sh/v4:Chart", RELEASE).inputs["values"]
    for component in (monitoring["prometheus"], monitoring["grafana"]):
        # Prometheus has no login: never a LoadBalancer; NodePorts only on kind.
        expected = "NodePort" if program.stack == "kind" else "ClusterIP"
        assert component["service"]["type"] == expected


def test_disruption_budgets_let_a_node_drain_at_the_fewest_replicas(cloud: Program) -> None:
    for service in CATALOG.services:
        values = cloud.named("helm.sh/v4:Chart", service.name).inputs["values"]
        (budget,) = by_kind(render(values), "PodDisruptionBudget")
        fewest = values["autoscaling"].get("minReplicas", values["replicas"])
        if values["autoscaling"]["enabled"] is False:
            fewest = values["replicas"]
        spec = budget["spec"]
        allowed = (
            spec["maxUnavailable"] if "maxUnavailable" in spec else fewest - spec["minAvailable"]
        )
        assert allowed >= 1, f"{service.name}: a drain could never evict its pod"


def test_a_catalog_change_to_the_rabbitmq_topology_rolls_the_nodes(tmp_path: Path) -> None:
    # RabbitMQ reads its definitions at boot; a new digest on the pod template restarts the
    # nodes one by one, and each imports the catalog's new queues as it starts.
    def digest(program: Program) -> str:
        (cluster,) = program.of_type(":RabbitmqCluster")
        template = cluster.inputs["spec"]["override"]["statefulSet"]["spec"]["template"]
        return str(template["metadata"]["annotations"][TOPOLOGY_ANNOTATION])

    before = digest(run("kind"))
    assert digest(run("kind")) == before, "an unchanged catalog must not restart RabbitMQ"
    changed = CATALOG.model_copy(
        update={"queues": (*CATALOG.queues, Queue(name="extra-queue", delivery_limit=3))}
    )
    assert digest(run("kind", _with_catalog(changed, tmp_path))) != before


def _pod_annotations(program: Program, service: str) -> dict[str, str]:
    chart = program.named("helm.sh/v4:Chart", service)
    documents = render(chart.inputs["values"], namespace=chart.inputs["namespace"])
    (deployment,) = by_kind(documents, "Deployment")
    annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
    return annotations


def test_a_stack_deploys_the_catalog_file_it_names(tmp_path: Path) -> None:
    program = run("kind", stack_config("kind") | {"tide:catalog": str(ORDERS)})
    orders = load_catalog(ORDERS)
    charts = {chart.name for chart in program.of_type("helm.sh/v4:Chart")}
    assert {s.name for s in orders.services} <= charts
    assert not {s.name for s in CATALOG.services} & charts, "no reference service is deployed"
    topics = {t.inputs["metadata"]["name"] for t in program.of_type(":KafkaTopic")}
    assert {"orders", "invoices", "billing.retry.1s", "billing.retry.10s", "billing.dlq"} <= topics
    (rule,) = program.of_type("PrometheusRule")
    dead_letter_alerts = {
        r["labels"].get("consumergroup")
        for group in rule.inputs["spec"]["groups"]
        for r in group["rules"]
        if r["alert"] == "TideDeadLettersGrowing"
    }
    assert dead_letter_alerts == {"billing", "shipping"}
    # The pods read the catalog the program deployed, as the program validated it.
    (config_map,) = [
        c for c in program.of_type("core/v1:ConfigMap")
        if c.inputs["metadata"]["name"] == CONFIG_MAP
    ]  # fmt: skip
    written = tmp_path / KEY
    written.write_text(config_map.inputs["data"][KEY])
    assert load_catalog(written) == orders


def test_a_catalog_change_rolls_every_service(tmp_path: Path) -> None:
    # A ConfigMap change alone restarts no pod: each pod template carries its digest.
    before = _pod_annotations(run("kind"), "badges")["checksum/catalog"]
    extra = Topic(name="extra-topic", partitions=1, retention_ms=3_600_000)
    changed = CATALOG.model_copy(update={"topics": (*CATALOG.topics, extra)})
    after = _pod_annotations(run("kind", _with_catalog(changed, tmp_path)), "badges")
    assert after["checksum/catalog"] != before


def test_a_catalog_file_that_does_not_load_stops_the_program_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "platform.yaml"
    broken.write_text(ORDERS.read_text().replace("partitions: 3", "partitions: many", 1))
    with pytest.raises(ConfigError) as caught:
        parse({"flavor": "kind", "auth": KEYS_AUTH, "catalog": str(broken)})
    assert f"tide:catalog: Value error, {broken}: topics[orders].partitions:" in str(caught.value)
    with pytest.raises(Exception, match="no such file"):
        run("kind", stack_config("kind") | {"tide:catalog": str(tmp_path / "missing.yaml")})


def test_a_stack_without_a_registry_deploys_none_and_its_services_write_plain_json() -> None:
    """`tide:schemaRegistry: none`: no Apicurio, no Job that registers schemas, no database
    or role for them; no service is given a registry URL or a way to one, so each writes
    plain JSON validated against the same schemas (tide.codecs.json_schema)."""
    program = run("kind", stack_config("kind") | {"tide:schemaRegistry": "none"})
    registry = sorted(f"{r.type} {r.name}" for r in program.resources if "registry" in r.name)
    assert registry == [], registry
    commands = {tuple(job.inputs["spec"]["template"]["spec"]["containers"][0]["args"])
                for job in program.of_type("kubernetes:batch/v1:Job")}  # fmt: skip
    assert commands == {("tide", "db", "migrate", "--grant")}
    (cluster,) = program.of_type("postgresql.cnpg.io/v1:Cluster")
    roles = {role["name"] for role in cluster.inputs["spec"]["managed"]["roles"]}
    assert roles == set(database_services(CATALOG)), "the services' roles, and no registry's"
    for service in CATALOG.services:
        namespace = program.named("helm.sh/v4:Chart", service.name).inputs["namespace"]
        values = program.named("helm.sh/v4:Chart", service.name).inputs["values"]
        (deployment,) = by_kind(render(values, namespace=namespace), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "TIDE_SCHEMA_REGISTRY_URL" not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("catalog_file", [None, ORDERS], ids=["reference", "orders"])
def test_each_rabbitmq_user_may_publish_and_consume_only_what_its_service_does(
    catalog_file: Path | None,
) -> None:
    config = stack_config("kind") | ({"tide:catalog": str(catalog_file)} if catalog_file else {})
    catalog = load_catalog(catalog_file) if catalog_file else CATALOG
    program = run("kind", config)
    (document,) = [
        json.loads(s.inputs["stringData"]["definitions.json"])
        for s in program.of_type("core/v1:Secret")
        if "definitions.json" in s.inputs.get("stringData", {})
    ]
    granted = {p["user"]: (p["configure"], p["write"], p["read"]) for p in document["permissions"]}
    for service in (s for s in catalog.services if catalog.uses_rabbitmq(s.name)):
        configure, write, read = granted[service.name]
        assert configure == "", f"{service.name} may declare or delete"
        exchanges = {e.name for e in catalog.exchanges}
        queues = {q.name for q in catalog.queues} | {q.dlq for q in catalog.queues}
        dead_letter_exchanges = {q.dead_letter_exchange for q in catalog.queues}
        written = {x for x in exchanges | dead_letter_exchanges | {"amq.default"}
                   if re.fullmatch(write, x)}  # fmt: skip
        read_from = {q for q in queues if re.fullmatch(read, q)}
        assert written == set(service.publishes_to_exchanges), service.name
        assert read_from == {w.queue for w in catalog.workers_of(service.name)}, service.name


def test_each_service_connects_to_postgres_as_its_own_managed_role(program: Program) -> None:
    (cluster,) = program.of_type("postgresql.cnpg.io/v1:Cluster")
    data = cluster.inputs["metadata"]["namespace"]
    managed = {r["name"]: r for r in cluster.inputs["spec"]["managed"]["roles"]}
    secrets = {(s.inputs["metadata"]["namespace"], s.inputs["metadata"]["name"]): s.inputs
               for s in program.of_type("core/v1:Secret")}  # fmt: skip
    services = database_services(CATALOG)
    assert services, "the reference catalog has services with a database"
    for service in services:
        role = managed[service]
        assert (role["ensure"], role["login"]) == ("present", True)
        credentials = secrets[(data, role["passwordSecret"]["name"])]
        # CloudNativePG reconciles the role's password from a Secret with this label.
        assert credentials["metadata"]["labels"]["cnpg.io/reload"] == "true"
        assert credentials["stringData"]["username"] == service
        chart = program.named("helm.sh/v4:Chart", service)
        apps = chart.inputs["namespace"]
        (deployment,) = by_kind(render(chart.inputs["values"], namespace=apps), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (variable,) = [e for e in container["env"] if e["name"] == "TIDE_POSTGRES_DSN"]
        reference = variable["valueFrom"]["secretKeyRef"]
        dsn = secrets[(apps, reference["name"])]["stringData"][reference["key"]]
        password = credentials["stringData"]["password"]
        assert dsn.startswith(f"postgresql://{service}:{password}@"), service
    others = [s.name for s in CATALOG.services if s.name not in services]
    assert others == ["video-service"], "an API without state gets no role"


def test_apis_take_only_the_stacks_credentials_and_other_services_none(program: Program) -> None:
    secrets = {s.inputs["metadata"]["name"]: s.inputs for s in program.of_type("core/v1:Secret")}
    for service in CATALOG.services:
        chart = program.named("helm.sh/v4:Chart", service.name)
        (deployment,) = by_kind(render(chart.inputs["values"]), "Deployment")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"] if e["name"].startswith("TIDE_AUTH_")}
        if service.role is not Role.API:
            assert env == {}, service.name
        elif program.stack == "kind":  # api-keys: the hashed keys, from their Secret
            assert env["TIDE_AUTH_MODE"]["value"] == "api-keys"
            reference = env["TIDE_AUTH_API_KEYS"]["valueFrom"]["secretKeyRef"]
            assert (reference["name"], reference["key"]) == (API_KEYS_SECRET, API_KEYS_KEY)
            # Read at start: a changed key list must roll the pods.
            stored = secrets[API_KEYS_SECRET]["stringData"][API_KEYS_KEY]
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            digest = hashlib.sha256(stored.encode()).hexdigest()
            assert annotations[f"checksum/{API_KEYS_SECRET}"] == digest
        else:  # jwt: the stack's issuer
            assert {k: v["value"] for k, v in env.items()} == {
                "TIDE_AUTH_MODE": "jwt",
                "TIDE_AUTH_ISSUER": "https://login.example.com/",
                "TIDE_AUTH_AUDIENCE": "tide",
                "TIDE_AUTH_JWKS_URL": "https://login.example.com/.well-known/jwks.json",
                # RFC 9068's access token types, unless the stack names others.
                "TIDE_AUTH_TOKEN_TYPES": "at+jwt,application/at+jwt",
            }
    if program.stack == "cloud":
        assert API_KEYS_SECRET not in secrets
        return
    # The Secret holds the derived key's hash, never the key; the API takes that key.
    key = derived_api_key(derive(TEST_SEED, api_key_purpose("player")))
    stored = secrets[API_KEYS_SECRET]["stringData"][API_KEYS_KEY]
    assert key not in stored
    (entry,) = parse_api_keys(stored)
    assert (entry.name, entry.sha256) == ("player", hash_key(key))
    assert entry.scopes == ["events:write", "subscriptions:read", "subscriptions:write"]
