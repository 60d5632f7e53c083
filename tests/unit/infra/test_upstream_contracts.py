"""What the upstream charts, operators and images need from Tide's objects to come up.

Each test names the upstream fact it rests on (read at the pinned version);
each one failed on the program before the deploy-blocker fixes.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from infra.components.kafka import CA_CERT_KEY, CA_SECRET, CLUSTER_NAME
from infra.components.monitoring import CONTROL_PLANE_COMPONENTS, RELEASE
from infra.components.service import KAFKA_CA_DIR

from ott.catalog import CATALOG
from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import Declared, Program
from tide.needs import Dependency, process_needs
from tide.rabbitmq.definitions import password_hash
from tide.settings import Settings


def _pod_spec(resource: Declared) -> dict[str, Any]:
    spec: dict[str, Any] = resource.inputs["spec"]["template"]["spec"]
    return spec


def _chart_values(program: Program, name: str) -> dict[str, Any]:
    values: dict[str, Any] = program.named("helm.sh/v4:Chart", name).inputs["values"]
    return values


def test_prometheus_operator_needs_no_secret_that_only_a_hook_would_make(program: Program) -> None:
    # kube-prometheus-stack 77.6.2: with prometheusOperator.tls.enabled the operator mounts
    # `<fullname>-admission`, made only by the admission-webhooks/job-patch hook Job; with
    # admissionWebhooks.enabled, webhook configurations wait for a caBundle the hook patches.
    # Pulumi's Chart v4 renders no hooks.
    operator = _chart_values(program, RELEASE)["prometheusOperator"]
    assert operator["tls"]["enabled"] is False
    assert operator["admissionWebhooks"]["enabled"] is False


def test_every_read_only_container_has_a_writable_tmp(program: Program) -> None:
    # Apicurio Registry 3.0.9 (Quarkus, Vert.x) and the JVM write under java.io.tmpdir at start.
    for resource in program.of_type("apps/v1:Deployment"):
        pod = _pod_spec(resource)
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{resource.name}: read-only root and no /tmp"  # noqa: S108
            assert "emptyDir" in volumes[mounts["/tmp"]]  # noqa: S108


def test_the_registry_keeps_its_own_database_and_role(program: Program) -> None:
    # Apicurio's PostgreSQL storage creates `outbox` (postgresql.ddl, 3.0.9), as Tide does.
    registry = program.named("apps/v1:Deployment", "registry")
    env = {e["name"]: e for e in _pod_spec(registry)["containers"][0]["env"]}
    database = env["APICURIO_DATASOURCE_URL"]["value"].rsplit("/", 1)[1]
    user_secret = env["APICURIO_DATASOURCE_USERNAME"]["valueFrom"]["secretKeyRef"]["name"]
    cluster = program.named(":Cluster", "postgres").inputs["spec"]
    assert database != cluster["bootstrap"]["initdb"]["database"]
    assert user_secret != cluster["bootstrap"]["initdb"]["secret"]["name"]
    roles = {r["name"]: r for r in cluster["managed"]["roles"]}
    (database_cr,) = program.of_type(":Database")
    assert database_cr.inputs["spec"]["name"] == database
    assert database_cr.inputs["spec"]["owner"] in roles
    assert roles[database_cr.inputs["spec"]["owner"]]["passwordSecret"]["name"] == user_secret
    # The registry starts only once its database exists.
    assert database_cr.name in program.waits_for(program.named(":SchemaRegistry", "registry"))


def test_custom_resources_that_others_need_are_awaited(program: Program) -> None:
    # pulumi-kubernetes awaits a custom resource only with the pulumi.com/waitFor annotation.
    for kind in (
        ":KafkaTopic",
        ":KafkaUser",
        ":Kafka",
        ":Cluster",
        ":Database",
        ":RabbitmqCluster",
    ):
        resources = program.of_type(kind)
        assert resources, kind
        for resource in resources:
            annotations = resource.inputs["metadata"].get("annotations", {})
            assert "pulumi.com/waitFor" in annotations, f"{kind} {resource.name} is not awaited"


def test_jobs_rerun_on_a_new_image_and_never_drift_out_of_state(program: Program) -> None:
    # A Job's pod template is immutable (the provider replaces a Job whose template changed);
    # a Job deleted by ttlSecondsAfterFinished fails Pulumi's next in-place update.
    for job in program.of_type("batch/v1:Job"):
        assert "ttlSecondsAfterFinished" not in job.inputs["spec"]
        image = _pod_spec(job)["containers"][0]["image"]
        assert job.inputs["metadata"]["name"].startswith(f"{job.name}-")
        assert not image.endswith(":source"), "the kind tag is resolved to the source digest"


def test_tls_clients_trust_the_ca_that_signs_the_listener(cloud: Program) -> None:
    # Strimzi keeps a CA it generates in the Kafka namespace only. cert-manager signs the
    # client listener's certificate (Strimzi `brokerCertChainAndKey`) with a CA ClusterIssuer,
    # and every certificate that issuer signs carries the CA as `ca.crt`: the one signed
    # into the apps namespace is where every client and KEDA read it.
    kafka = cloud.named(":Kafka", "kafka").inputs["spec"]
    assert "clusterCa" not in kafka, "Strimzi keeps its own cluster CA for the brokers"
    (scram,) = [lis for lis in kafka["kafka"]["listeners"] if lis["name"] == "scram"]
    assert scram["tls"] is True
    chain = scram["configuration"]["brokerCertChainAndKey"]
    certificates = {
        (c.inputs["metadata"]["namespace"], c.inputs["metadata"]["name"]): c.inputs["spec"]
        for c in cloud.of_type(":Certificate")
    }
    listener = certificates[("tide-data", chain["secretName"])]
    assert listener["secretName"] == chain["secretName"]
    assert f"{CLUSTER_NAME}-kafka-bootstrap.tide-data.svc" in listener["dnsNames"]
    assert f"*.{CLUSTER_NAME}-kafka-brokers.tide-data.svc" in listener["dnsNames"]
    trust = certificates[("tide-apps", CA_SECRET)]
    assert trust["secretName"] == CA_SECRET
    assert trust["issuerRef"] == listener["issuerRef"], "both signed by the same CA"
    issuers = {
        i.inputs["metadata"]["name"]: i.inputs["spec"] for i in cloud.of_type(":ClusterIssuer")
    }
    ca_secret = issuers[listener["issuerRef"]["name"]]["ca"]["secretName"]
    (ca,) = [spec for spec in certificates.values() if spec.get("isCA")]
    assert ca["secretName"] == ca_secret
    # No key or certificate passes through the program (and so the state).
    assert not cloud.of_type("tls:")
    clients = 0
    for chart in cloud.of_type("helm.sh/v4:Chart"):
        values = chart.inputs.get("values", {})
        if "TIDE_KAFKA_BOOTSTRAP" not in values.get("env", {}):
            continue
        clients += 1
        documents = render(values)
        (deployment,) = by_kind(documents, "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TIDE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["TIDE_KAFKA_CA_LOCATION"] == f"{KAFKA_CA_DIR}/{CA_CERT_KEY}"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        secret = volumes[mounts[KAFKA_CA_DIR]]["secret"]
        assert (secret["secretName"], secret["items"][0]["key"]) == (CA_SECRET, CA_CERT_KEY)
        # KEDA's Kafka scaler verifies the brokers with the same certificate.
        for auth in by_kind(documents, "TriggerAuthentication"):
            refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
            if "sasl" in refs:  # a Kafka trigger's credentials
                assert (refs["ca"]["name"], refs["ca"]["key"]) == (CA_SECRET, CA_CERT_KEY)
    assert clients >= 6
    client = Settings(
        kafka_bootstrap="b:9092",
        kafka_security_protocol="SASL_SSL",
        kafka_username="u",
        kafka_ca_location=f"{KAFKA_CA_DIR}/{CA_CERT_KEY}",
    ).kafka_client_config()
    assert client["ssl.ca.location"] == f"{KAFKA_CA_DIR}/{CA_CERT_KEY}"


def test_plaintext_stacks_mount_no_ca(kind: Program) -> None:
    for chart in kind.of_type("helm.sh/v4:Chart"):
        values = chart.inputs.get("values", {})
        if (
            "name" in values
            and Dependency.KAFKA in process_needs(CATALOG, values["name"]).dependencies
        ):
            assert values["secretFiles"] == []
            assert "TIDE_KAFKA_CA_LOCATION" not in values["env"]


def test_kind_monitoring_scrapes_no_control_plane_part_it_cannot_reach(program: Program) -> None:
    # kube-prometheus-stack renders KubeSchedulerDown, KubeControllerManagerDown,
    # KubeProxyDown and the etcd rules only while kubeScheduler, kubeControllerManager,
    # kubeProxy and kubeEtcd are enabled (templates/prometheus/rules-1.14/*.yaml); on kind
    # they listen on the node's loopback, so enabled they would fire for ever.
    values = _chart_values(program, RELEASE)
    for component in CONTROL_PLANE_COMPONENTS:
        assert values[component]["enabled"] is (program.stack != "kind"), component


def test_the_rabbitmq_operators_default_user_is_an_administrator_in_the_definitions(
    program: Program,
) -> None:
    # RabbitMQ seeds no default user when it loads definitions at boot, so the operator's
    # own `<cluster>-default-user` Secret would name a user that does not exist. The
    # operator is given Tide's Secret instead (cluster-operator v2.16.0: with
    # secretBackend.externalSecret it mounts that Secret's default_user.conf and makes no
    # default-user Secret), and the definitions hold the same user with every right.
    (cluster,) = program.of_type(":RabbitmqCluster")
    secret_name = cluster.inputs["spec"]["secretBackend"]["externalSecret"]["name"]
    namespace = cluster.inputs["metadata"]["namespace"]
    (admin,) = [
        s.inputs["stringData"]
        for s in program.of_type("core/v1:Secret")
        if s.inputs["metadata"]["name"] == secret_name
        and s.inputs["metadata"]["namespace"] == namespace
    ]
    assert admin["default_user.conf"] == (
        f"default_user = {admin['username']}\ndefault_pass = {admin['password']}\n"
    )
    (definitions,) = [
        json.loads(s.inputs["stringData"]["definitions.json"])
        for s in program.of_type("core/v1:Secret")
        if "definitions.json" in s.inputs.get("stringData", {})
    ]
    users = {u["name"]: u for u in definitions["users"]}
    assert users[admin["username"]]["tags"] == ["administrator"]
    assert users[admin["username"]]["password_hash"] == password_hash(
        admin["password"],
        base64.b64decode(users[admin["username"]]["password_hash"])[:4],
    )
    (rights,) = [p for p in definitions["permissions"] if p["user"] == admin["username"]]
    assert (rights["configure"], rights["write"], rights["read"]) == (".*", ".*", ".*")


def test_the_rabbitmq_operator_sees_no_warning_in_the_cluster_resources(program: Program) -> None:
    # cluster-operator v2.16.0 (internal/status/no_warnings.go) sets NoWarnings=False with
    # "RabbitMQ container memory resource request and limit must be equal" otherwise.
    (cluster,) = program.of_type(":RabbitmqCluster")
    resources = cluster.inputs["spec"]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"], resources
