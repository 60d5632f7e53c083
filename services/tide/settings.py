"""Process settings, from `TIDE_*` environment variables only (12-factor); validated at start."""

from __future__ import annotations

from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tide.auth import ACCESS_TOKEN_TYPES, TOKEN_TYPE, AuthMode, Guard, guard_from, parse_api_keys
from tide.catalog_file import CatalogFileError, read_catalog
from tide.topology import Catalog

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    """What a Tide process is told by its environment (the chart renders it from the catalog)."""

    model_config = SettingsConfigDict(env_prefix="TIDE_", extra="ignore", frozen=True)

    service: str = Field(default="", description="catalog service this process runs")
    catalog_file: str = Field(
        default="",
        description="the platform's catalog (YAML); every command that runs a service needs it",
    )
    catalog_suffix: str = Field(
        default="",
        pattern=r"^[a-z0-9-]{0,20}$",
        description="suffix every topic, group, exchange and queue (Catalog.isolated)",
    )
    kafka_bootstrap: str = ""
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    kafka_ca_location: str = Field(
        default="", description="PEM file of the CA that signs the brokers' TLS certificates"
    )
    schema_registry_url: str = Field(default="", description="empty: validate locally, plain JSON")
    rabbitmq_url: SecretStr = SecretStr("")
    postgres_dsn: SecretStr = SecretStr("")
    http_port: int = Field(default=8080, ge=1, le=65535)
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="0: /metrics on the HTTP port; else on this port alone, which the"
        " chart's public Service does not expose",
    )
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    # Below the handler sessions' idle-in-transaction limit (60 s, tide.kafka.processing):
    # a handler waits for this ack inside its transaction.
    publish_timeout_s: float = Field(default=10.0, gt=0, le=50)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Who may call an API (tide.auth); a cluster stack never deploys with "none".
    auth_mode: AuthMode = AuthMode.NONE
    auth_issuer: str = Field(default="", description="jwt: the `iss` every token must have")
    auth_audience: str = Field(default="", description="jwt: the `aud` every token must name")
    auth_jwks_url: str = Field(default="", description="jwt: where the issuer's keys are")
    auth_token_types: str = Field(
        default=",".join(ACCESS_TOKEN_TYPES),
        pattern=rf"^{TOKEN_TYPE}(,{TOKEN_TYPE})*$",
        description="jwt: the `typ` headers an access token may carry, comma-separated",
    )
    auth_api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="api-keys: JSON list of {name, sha256, scopes} (`tide auth new-key`)",
    )
    parent_pid: int | None = Field(
        default=None,
        description="set by `tide-dev run` and the chaos platform: drain and exit when that"
        " process is gone, so no local child outlives what started it",
    )

    @field_validator("postgres_dsn")
    @classmethod
    def _dsn_parses(cls, value: SecretStr) -> SecretStr:
        # A DSN that cannot parse fails every connection forever: it is configuration, not an
        # outage, so the process stops at start instead of retrying (or dead-lettering) records.
        dsn = value.get_secret_value()
        if dsn:
            try:
                parsed = conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                reason = str(exc).strip()
                raise ValueError(f"TIDE_POSTGRES_DSN is not a PostgreSQL DSN: {reason}") from None
            if not str(parsed.get("port", "5432")).isdigit():
                raise ValueError(f"TIDE_POSTGRES_DSN has port {parsed['port']!r}, not a number")
        return value

    @field_validator("catalog_file")
    @classmethod
    def _catalog_loads(cls, value: str) -> str:
        # Read once at start: a catalog that does not validate is configuration, exit 3.
        if value:
            try:
                read_catalog(value)
            except CatalogFileError as exc:
                raise ValueError(f"TIDE_CATALOG_FILE: {exc}") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LEVELS:
            raise ValueError(f"TIDE_LOG_LEVEL={value!r} is not one of {', '.join(_LEVELS)}")
        return value.upper()

    @model_validator(mode="after")
    def _credentials_with_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_username:
            raise ValueError(
                f"TIDE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "TIDE_KAFKA_USERNAME and TIDE_KAFKA_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _auth_complete(self) -> Settings:
        # Checked at start: an API that cannot check anyone must not serve at all.
        if self.auth_mode is AuthMode.JWT:
            missing = [
                f"TIDE_{name.upper()}"
                for name in ("auth_issuer", "auth_audience", "auth_jwks_url")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"TIDE_AUTH_MODE=jwt needs {', '.join(missing)}")
        if self.auth_mode is AuthMode.API_KEYS:
            keys = self.auth_api_keys.get_secret_value()
            if not keys:
                raise ValueError("TIDE_AUTH_MODE=api-keys needs TIDE_AUTH_API_KEYS")
            parse_api_keys(keys)
        return self

    def guard(self) -> Guard:
        """Who may call this process's API, as its TIDE_AUTH_* settings say."""
        return guard_from(
            self.auth_mode,
            issuer=self.auth_issuer,
            audience=self.auth_audience,
            jwks_url=self.auth_jwks_url,
            token_types=self.auth_token_types.split(","),
            api_keys=self.auth_api_keys.get_secret_value(),
        )

    def catalog(self) -> Catalog:
        """The catalog this process runs, isolated when a suffix is set. The runtime has no
        catalog of its own: the image, the chart or the tools name the platform's file."""
        if not self.catalog_file:
            raise MissingSettingError(
                f"{self.service or 'tide'} has no catalog: set TIDE_CATALOG_FILE to your"
                " platform's catalog file (or pass --catalog)"
            )
        catalog = read_catalog(self.catalog_file)
        return catalog.isolated(self.catalog_suffix) if self.catalog_suffix else catalog

    def require(self, *names: str) -> None:
        """Fail at start, naming the variables, when a process lacks what it needs."""
        missing = []
        for name in names:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                missing.append(f"TIDE_{name.upper()}")
        if missing:
            raise MissingSettingError(
                f"{self.service or 'tide'} cannot start: set {', '.join(missing)}"
            )

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every producer and consumer."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
            "client.id": self.service or "tide",
        }
        if self.kafka_ca_location:
            config["ssl.ca.location"] = self.kafka_ca_location
        if self.kafka_security_protocol.startswith("SASL"):
            config |= {
                "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_username,
                "sasl.password": self.kafka_password.get_secret_value(),
            }
        return config


class MissingSettingError(RuntimeError):
    """A required TIDE_* variable is not set."""
