"""Every process the program deploys starts on exactly the environment its manifest gives it,
and can reach what it needs.

Each service's Deployment is rendered by the chart from the values the program passes;
its container's `env`, and nothing else, becomes the process environment (a Secret key
must be one the program creates in that namespace). `tide.launch`'s start-up check then
has to pass, and the NetworkPolicies have to open every endpoint the process dials.
The one-shot Jobs are held to the same rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from ott.catalog import CATALOG
from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import Declared, Program
from tide.handlers import NotRunnableError, load_app
from tide.launch import check_needs
from tide.needs import Dependency, Needs, command_needs, process_needs
from tide.settings import MissingSettingError, Settings
from tide.topology import Role, Service

SERVICES = [service.name for service in CATALOG.services]
NAMESPACE_LABEL = "kubernetes.io/metadata.name"

_rendered: dict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = {}


def _render(program: Program, service: str) -> tuple[str, list[dict[str, Any]]]:
    """The chart as the program installs it for `service`: its namespace and its documents."""
    key = (program.stack, service)
    if key not in _rendered:
        chart = program.named("helm.sh/v4:Chart", service)
        namespace = chart.inputs["namespace"]
        _rendered[key] = namespace, render(chart.inputs["values"], namespace=namespace)
    return _rendered[key]


def _secrets(program: Program, namespace: str) -> dict[tuple[str, str], Any]:
    """Every (Secret, key) the program creates in `namespace`, with its value as declared."""
    found: dict[tuple[str, str], Any] = {}
    for secret in program.of_type("kubernetes:core/v1:Secret"):
        metadata = secret.inputs["metadata"]
        if metadata.get("namespace") == namespace:
            for field in ("stringData", "data"):
                for key, value in (secret.inputs.get(field) or {}).items():
                    found[(metadata["name"], key)] = value
    return found


def _config_maps(program: Program, namespace: str) -> dict[tuple[str, str], str]:
    """Every (ConfigMap, key) the program creates in `namespace`, with its text."""
    found: dict[tuple[str, str], str] = {}
    for config_map in program.of_type("kubernetes:core/v1:ConfigMap"):
        metadata = config_map.inputs["metadata"]
        if metadata.get("namespace") == namespace:
            for key, value in (config_map.inputs.get("data") or {}).items():
                found[(metadata["name"], key)] = value
    return found


def _environment(
    pod: dict[str, Any], program: Program, namespace: str, root: Path
) -> dict[str, str]:
    """The container's variables as the kubelet sets them: a Secret key becomes the value the
    program declared for it, so a DSN or URL is checked as the process will parse it; a
    ConfigMap volume becomes files under `root`, and a variable naming one of them the path
    there, so the process reads what the program wrote."""
    (container,) = pod["containers"]
    assert "envFrom" not in container, "only `env` is modelled here"
    secrets = _secrets(program, namespace)
    config_maps = _config_maps(program, namespace)
    volumes = {volume["name"]: volume for volume in pod.get("volumes") or []}
    mounted: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        source = volumes[mount["name"]].get("configMap")
        if source is None:
            continue
        here = root / mount["mountPath"].lstrip("/")
        here.mkdir(parents=True, exist_ok=True)
        for item in source["items"]:
            where = (source["name"], item["key"])
            assert where in config_maps, (
                f"volume {mount['name']!r} reads key {item['key']!r} of ConfigMap "
                f"{source['name']!r}, which the program does not create in {namespace!r}"
            )
            (here / item["path"]).write_text(config_maps[where])
        mounted[mount["mountPath"]] = here
    environment: dict[str, str] = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "valueFrom" not in variable:
            value = variable["value"]
            for path, here in mounted.items():
                if value.startswith(f"{path}/"):
                    value = str(here / value.removeprefix(f"{path}/"))
            environment[name] = value
            continue
        ref = variable["valueFrom"]["secretKeyRef"]
        where = (ref["name"], ref["key"])
        assert where in secrets, (
            f"{name} reads key {ref['key']!r} of Secret {ref['name']!r}, "
            f"which the program does not create in namespace {namespace!r}"
        )
        environment[name] = str(secrets[where])
    return environment


def _settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings from `environment` alone: no TIDE_* variable of the machine running the tests."""
    for name in list(os.environ):
        if name.upper().startswith("TIDE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _is_set(settings: Settings, name: str) -> bool:
    value = getattr(settings, name)
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def _pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(documents, "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _dialled(value: str) -> tuple[str, int]:
    """The host and port a setting points a client at: a URL or DSN, or a Kafka bootstrap list."""
    if "://" in value:
        url = urlsplit(value)
        assert url.hostname, f"{value!r} names no host"
        assert url.port, f"{value!r} names no port"
        return url.hostname, url.port
    host, _, port = value.split(",", maxsplit=1)[0].rpartition(":")
    return host, int(port)


def _namespace_of(host: str) -> str:
    """`<service>.<namespace>.svc[.cluster.local]` -> namespace."""
    parts = host.split(".")
    assert parts[2:3] == ["svc"], f"{host} is not a cluster service address"
    return parts[1]


def _peer_is(peer: dict[str, Any], namespace: str) -> bool:
    return bool(
        peer.get("namespaceSelector", {}).get("matchLabels") == {NAMESPACE_LABEL: namespace}
    )


def _tcp_ports(rule: dict[str, Any]) -> set[int]:
    return {p["port"] for p in rule.get("ports", []) if p.get("protocol", "TCP") == "TCP"}


def _egress_ports(policies: list[dict[str, Any]], to: str) -> set[int]:
    """TCP ports these NetworkPolicy specs open towards namespace `to`."""
    return {
        port
        for spec in policies
        for rule in spec.get("egress") or []
        if any(_peer_is(peer, to) for peer in rule.get("to", []))
        for port in _tcp_ports(rule)
    }


def _ingress_ports(program: Program, namespace: str, source: str) -> set[int]:
    """TCP ports the program's NetworkPolicies in `namespace` admit from namespace `source`."""
    return {
        port
        for policy in program.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if policy.inputs["metadata"].get("namespace") == namespace
        for rule in policy.inputs["spec"].get("ingress") or []
        if any(_peer_is(peer, source) for peer in rule.get("from", []))
        for port in _tcp_ports(rule)
    }


def _assert_reachable(
    needs: Needs,
    settings: Settings,
    egress: list[dict[str, Any]],
    program: Program,
    namespace: str,
    who: str,
) -> None:
    for dependency in needs.dependencies:
        value = getattr(settings, dependency.setting)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        assert value, f"{who} is not told where {dependency} is ({dependency.variable})"
        host, port = _dialled(value)
        target = _namespace_of(host)
        assert port in _egress_ports(egress, target), (
            f"{who} dials {dependency} at {host}:{port}, which its egress does not open"
        )
        assert port in _ingress_ports(program, target, namespace), (
            f"{who} dials {dependency} at {host}:{port}, which {target} does not admit"
        )


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_starts_on_exactly_the_environment_its_deployment_renders(
    program: Program, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace, documents = _render(program, service)
    settings = _settings(_environment(_pod(documents), program, namespace, tmp_path), monkeypatch)
    assert settings.service == service
    # It reads the catalog the program built the platform from, from the mounted ConfigMap.
    assert settings.catalog_file.startswith(str(tmp_path))
    assert settings.catalog() == CATALOG
    # What `tide run` checks before it builds anything: MissingSettingError names the variable.
    needs = check_needs(service, settings, settings.catalog())
    # What it uses when given (the registry) is given too: a deployment has one.
    missing = [d.variable for d in needs.dependencies if not _is_set(settings, d.setting)]
    assert missing == [], f"{service} ({program.stack}) is not given {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_network_policy_opens_every_dependency_it_dials(
    program: Program, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace, documents = _render(program, service)
    settings = _settings(_environment(_pod(documents), program, namespace, tmp_path), monkeypatch)
    (policy,) = by_kind(documents, "NetworkPolicy")
    needs = process_needs(CATALOG, service)
    _assert_reachable(needs, settings, [policy["spec"]], program, namespace, service)


def _jobs(program: Program) -> list[Declared]:
    jobs = program.of_type("kubernetes:batch/v1:Job")
    commands = {tuple(_job_container(job)["args"]) for job in jobs}
    assert {("tide", "db", "migrate", "--grant"), ("tide", "registry", "register")} <= commands
    return jobs


def _job_pod(job: Declared) -> dict[str, Any]:
    pod: dict[str, Any] = job.inputs["spec"]["template"]["spec"]
    return pod


def _job_container(job: Declared) -> dict[str, Any]:
    (container,) = _job_pod(job)["containers"]
    container_: dict[str, Any] = container
    return container_


def test_each_job_starts_on_exactly_the_environment_it_is_given(
    program: Program, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for job in _jobs(program):
        namespace = job.inputs["metadata"]["namespace"]
        container = _job_container(job)
        root = tmp_path / job.name
        settings = _settings(_environment(_job_pod(job), program, namespace, root), monkeypatch)
        if container["args"][1:] in (["registry", "register"], ["db", "migrate", "--grant"]):
            # It registers the schemas, or grants the roles, of the catalog the program
            # built from.
            assert settings.catalog() == CATALOG
        needs = command_needs(container["args"])
        # The check `tide db migrate` and `tide registry register` make before they start.
        settings.require(*needs.required_settings)


def test_each_job_network_policy_opens_every_dependency_it_dials(
    program: Program, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for job in _jobs(program):
        namespace = job.inputs["metadata"]["namespace"]
        labels = job.inputs["spec"]["template"]["metadata"]["labels"]
        container = _job_container(job)
        root = tmp_path / job.name
        settings = _settings(_environment(_job_pod(job), program, namespace, root), monkeypatch)
        egress = [
            policy.inputs["spec"]
            for policy in program.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
            if policy.inputs["metadata"].get("namespace") == namespace
            and policy.inputs["spec"]["podSelector"].get("matchLabels", {}).items()
            <= labels.items()
        ]
        needs = command_needs(container["args"])
        _assert_reachable(needs, settings, egress, program, namespace, job.name)


def test_a_consumer_refuses_to_start_without_postgres_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every consumer records its exactly-once marks in PostgreSQL (issue #14).
    settings = _settings(
        {"TIDE_SERVICE": "recommendation", "TIDE_KAFKA_BOOTSTRAP": "kafka:9092"}, monkeypatch
    )
    with pytest.raises(
        MissingSettingError, match=r"recommendation cannot start: set TIDE_POSTGRES_DSN$"
    ):
        check_needs("recommendation", settings, CATALOG)


def test_every_consumer_and_worker_needs_postgres_for_its_marks() -> None:
    for service in CATALOG.services:
        if service.role in (Role.CONSUMER, Role.WORKER):
            assert Dependency.POSTGRES in process_needs(CATALOG, service.name).required


def test_each_dependency_names_a_setting_and_its_variable() -> None:
    for dependency in Dependency:
        field = Settings.model_fields[dependency.setting]
        assert field is not None
        assert dependency.variable == f"TIDE_{dependency.setting.upper()}"


def test_a_job_command_needs_what_its_cli_command_checks() -> None:
    assert command_needs(["tide", "db", "migrate"]).required_settings == ("postgres_dsn",)
    assert command_needs(["registry", "register"]).required_settings == ("schema_registry_url",)
    assert command_needs(["tide", "run", "badges"], CATALOG) == process_needs(CATALOG, "badges")
    with pytest.raises(LookupError, match="needs the catalog"):
        command_needs(["tide", "run", "badges"])
    with pytest.raises(LookupError, match="tide topics create"):
        command_needs(["tide", "topics", "create"])


def test_an_api_without_an_app_is_refused_by_the_catalog() -> None:
    with pytest.raises(ValueError, match="role api needs app"):
        Service(name="search", role=Role.API)


def test_an_api_needs_postgres_only_when_the_catalog_says_it_keeps_state() -> None:
    stateless = Service(name="search", role=Role.API, app="search.api:app")
    catalog = CATALOG.model_copy(update={"services": (*CATALOG.services, stateless)})
    assert process_needs(catalog, "search").required == {Dependency.KAFKA}
    assert process_needs(CATALOG, "subscription").required == {
        Dependency.KAFKA, Dependency.POSTGRES}  # fmt: skip


def test_an_app_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(NotRunnableError, match=r"'search\.api:app' named in the catalog"):
        load_app("search.api:app")
