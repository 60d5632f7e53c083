"""Typed stack configuration: read from `tide:*` keys, validated before any resource exists."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import pulumi
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from infra.image import SOURCE_TAG, context_digest
from tide.auth import ACCESS_TOKEN_TYPES, CLIENT_NAME, TOKEN_TYPE
from tide.catalog_file import CatalogFileError, read_catalog
from tide.topology import Catalog

NAMESPACE = "tide"
# Where Pulumi.yaml is: a relative `tide:catalog` is read from here.
PROJECT_DIR = Path(__file__).resolve().parents[1]


class _Section(BaseModel):
    # Stack files use Pulumi's camelCase; unknown keys are typos and fail the run.
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class Storage(_Section):
    """Where a stateful component keeps its data."""

    type: Literal["ephemeral", "persistent-claim"] = "ephemeral"
    size: str = Field(default="10Gi", pattern=r"^[1-9][0-9]*(Mi|Gi|Ti)$")
    storage_class: str | None = None


class KafkaSettings(_Section):
    """The Strimzi `Kafka` cluster."""

    version: str = Field(default="4.1.0", pattern=r"^\d+\.\d+\.\d+$")
    brokers: int = Field(default=1, ge=1, le=15)
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int = Field(default=1, ge=1)
    tls: bool = False
    storage: Storage = Storage()

    @model_validator(mode="after")
    def _replication_fits(self) -> Self:
        if self.replication_factor > self.brokers:
            raise ValueError(
                f"replicationFactor {self.replication_factor} needs at least that many brokers "
                f"(brokers is {self.brokers})"
            )
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"minInsyncReplicas {self.min_insync_replicas} cannot exceed "
                f"replicationFactor {self.replication_factor}"
            )
        return self


class RabbitMQSettings(_Section):
    replicas: Literal[1, 3, 5] = 1
    storage: Storage = Storage(size="2Gi")


class ClaimStorage(Storage):
    """Storage that is always a persistent claim: CloudNativePG has no ephemeral storage."""

    type: Literal["ephemeral", "persistent-claim"] = "persistent-claim"

    @model_validator(mode="after")
    def _is_a_claim(self) -> Self:
        # CloudNativePG keeps PGDATA on a claim, always.
        if self.type != "persistent-claim":
            raise ValueError(
                f"storage.type {self.type!r} is not possible: CloudNativePG keeps its"
                " data on a persistent claim; set persistent-claim"
            )
        return self


class PostgresSettings(_Section):
    instances: int = Field(default=1, ge=1, le=5)
    # A size alone (`storage: {size: 5Gi}`) is a claim of that size.
    storage: ClaimStorage = ClaimStorage(size="2Gi")


class Versions(_Section):
    """Upstream charts and manifests, pinned. Bump deliberately; they are tested together."""

    strimzi: str = "0.48.0"
    keda: str = "2.17.2"
    cloudnative_pg: str = "0.26.0"
    kube_prometheus_stack: str = "77.6.2"
    rabbitmq_cluster_operator: str = "2.16.0"
    apicurio_registry: str = "3.0.9"
    # The cloud stack's Kafka listener certificates (jetstack/cert-manager chart).
    cert_manager: str = "v1.18.2"
    postgres_image: str = "ghcr.io/cloudnative-pg/postgresql:17.5"


class Image(_Section):
    """The one Tide service image; the command line chooses the role."""

    repository: str = "tide"
    # "source": the digest of the build context (infra.image), which `make up` tags.
    tag: str = "dev"
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"

    @property
    def resolved_tag(self) -> str:
        """The tag pods pull: `source` resolved to the digest `make up` builds."""
        return context_digest() if self.tag == SOURCE_TAG else self.tag

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.resolved_tag}"


class Exposure(_Section):
    """How people reach the API, Grafana and Prometheus from outside the cluster."""

    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    api_node_port: int | None = Field(default=None, ge=30000, le=32767)
    grafana_node_port: int | None = Field(default=None, ge=30000, le=32767)
    prometheus_node_port: int | None = Field(default=None, ge=30000, le=32767)


class ApiClient(_Section):
    """One client of the APIs under `api-keys`, and what it may do (tide.auth scopes)."""

    name: str = Field(pattern=CLIENT_NAME)
    scopes: list[str] = Field(min_length=1)
    # A key made elsewhere (`tide auth new-key`), by its SHA-256 only. Unset: the key is
    # derived from tide:credentialSeed and read back from the `apiKeys` stack output.
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Auth(_Section):
    """Who may call the APIs (tide.auth). There is no `none`: a cluster stack never serves
    an API that anyone who reaches it may call."""

    mode: Literal["jwt", "api-keys"]
    issuer: str | None = None
    audience: str | None = None
    jwks_url: str | None = Field(default=None, pattern=r"^https?://")
    # The `typ` headers an access token may carry (RFC 9068 by default); an issuer that
    # types its access tokens `JWT` must be named here to be trusted.
    token_types: list[Annotated[str, Field(pattern=rf"^{TOKEN_TYPE}$")]] = Field(
        default=list(ACCESS_TOKEN_TYPES), min_length=1
    )
    clients: list[ApiClient] = []

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.mode == "jwt":
            missing = [
                alias
                for name, alias in (
                    ("issuer", "issuer"),
                    ("audience", "audience"),
                    ("jwks_url", "jwksUrl"),
                )
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"mode jwt needs {', '.join(missing)}")
        if self.mode == "api-keys" and not self.clients:
            raise ValueError("mode api-keys needs at least one entry in clients")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"clients names one twice: {sorted(names)}")
        return self

    @property
    def jwks_port(self) -> int | None:
        """The port the APIs dial for the issuer's keys (their egress must allow it)."""
        if self.mode != "jwt" or self.jwks_url is None:
            return None
        url = urlsplit(self.jwks_url)
        return url.port or (443 if url.scheme == "https" else 80)


class StackConfig(_Section):
    """Everything a stack may set; `kind` and `cloud` differ only in these values."""

    flavor: Literal["kind", "cloud"]
    namespace_prefix: str = Field(default="tide", pattern=r"^[a-z][a-z0-9-]{0,20}$")
    kafka: KafkaSettings = KafkaSettings()
    rabbitmq: RabbitMQSettings = RabbitMQSettings()
    postgres: PostgresSettings = PostgresSettings()
    versions: Versions = Versions()
    image: Image = Image()
    exposure: Exposure = Exposure()
    pod_disruption_budgets: bool = False
    # "install": Tide installs Strimzi, CloudNativePG, KEDA, the RabbitMQ cluster operator,
    # kube-prometheus-stack (and cert-manager on TLS stacks). "external": the cluster runs
    # them already; Tide checks their CRDs and installs none (infra.components.upstream).
    operators: Literal["install", "external"] = "install"
    # Where cert-manager keeps the secrets of ClusterIssuers: its own namespace when it is
    # external (the chart's default), the system namespace when Tide installs it.
    cert_manager_namespace: str = Field(default="cert-manager", pattern=r"^[a-z][a-z0-9-]{0,62}$")
    node_exporter: bool = Field(
        default=True, description="kind nodes are containers: host metrics there mean little"
    )
    # "deploy": Apicurio Registry in the data namespace, on its own database, every schema
    # registered by a Job; producers write registry-framed JSON. "none": no registry, and
    # no database or role for one; producers validate each event against the same
    # schemas and write plain JSON (tide.codecs.json_schema), as `make local` does. For a
    # cluster that cannot run Apicurio's image; a registry is added back by `deploy`.
    schema_registry: Literal["deploy", "none"] = "deploy"
    # The platform's catalog file (YAML), relative to the project directory; unset: the
    # program's own (Tide's program: the reference OTT platform's). The image must hold
    # the packages it names (handlers, apps, event schemas); the pods read this catalog
    # from a ConfigMap (infra.components.catalog).
    catalog: str | None = Field(default=None, min_length=1)
    # Required: None is refused below, naming the two modes.
    auth: Auth | None = None

    @field_validator("catalog")
    @classmethod
    def _catalog_loads(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                read_catalog(_project_path(value))
            except CatalogFileError as exc:
                raise ValueError(str(exc)) from None
        return value

    def platform_catalog(self, default: Catalog) -> Catalog:
        """The catalog this stack deploys: its `tide:catalog` file, else the program's."""
        return default if self.catalog is None else read_catalog(_project_path(self.catalog))

    @model_validator(mode="after")
    def _auth_chosen(self) -> Self:
        if self.auth is None:
            raise ValueError(
                "tide:auth is not set: the APIs would take requests from anyone who reaches"
                " them. Set mode jwt (issuer, audience, jwksUrl) or api-keys (clients)"
            )
        return self

    @model_validator(mode="after")
    def _cloud_is_production_shaped(self) -> Self:
        if self.flavor == "cloud":
            problems = []
            if self.kafka.brokers < 3:
                problems.append("kafka.brokers must be at least 3 on a cloud stack")
            if self.kafka.replication_factor < 3:
                problems.append("kafka.replicationFactor must be at least 3 on a cloud stack")
            if self.kafka.min_insync_replicas < 2:
                problems.append("kafka.minInsyncReplicas must be at least 2 on a cloud stack")
            if not self.pod_disruption_budgets:
                problems.append("podDisruptionBudgets must be true on a cloud stack")
            if self.auth is not None and (self.auth.jwks_url or "https").startswith("http:"):
                # Whoever can change the keys on the way can sign any token.
                problems.append("auth.jwksUrl must be https on a cloud stack")
            if problems:
                raise ValueError("; ".join(problems))
        return self


def _project_path(value: str) -> str:
    path = Path(value)
    return str(path if path.is_absolute() else PROJECT_DIR / path)


class ConfigError(Exception):
    """A stack setting is wrong; the message names the key and what is allowed."""


# Top-level keys under `tide:` in Pulumi.<stack>.yaml, by field.
_KEYS = {name: (field.alias or name) for name, field in StackConfig.model_fields.items()}


def parse(values: Mapping[str, Any]) -> StackConfig:
    """Validate raw `tide:*` values (keyed by their camelCase names) into a StackConfig."""
    try:
        return StackConfig.model_validate(dict(values))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            where = f"{NAMESPACE}:{key}" if key else f"{NAMESPACE} (stack config)"
            lines.append(f"{where}: {error['msg']}")
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(lines)) from None


def load() -> StackConfig:
    """Read the current stack's `tide:*` keys and validate them."""
    config = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    for alias in _KEYS.values():
        raw = config.get(alias)
        if raw is None:
            continue
        # Pulumi hands structured values over as JSON text, plain ones as is.
        try:
            values[alias] = json.loads(raw)
        except json.JSONDecodeError:
            values[alias] = raw
    return parse(values)
