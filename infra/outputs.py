"""The stack outputs: their names (tests and `make up` import these) and the URLs they carry."""

from __future__ import annotations

from infra.config import StackConfig
from tide.topology import Catalog

API_URL = "apiUrl"
GRAFANA_URL = "grafanaUrl"
GRAFANA_ADMIN_PASSWORD = "grafanaAdminPassword"  # noqa: S105 - an output name, not a password
PROMETHEUS_URL = "prometheusUrl"
KAFKA_BOOTSTRAP = "kafkaBootstrap"
SCHEMA_REGISTRY_URL = "schemaRegistryUrl"
NAMESPACES = "namespaces"
# Each derived API key by client name (a secret): `pulumi stack output --show-secrets apiKeys`.
API_KEYS = "apiKeys"


def endpoint_urls(
    config: StackConfig, namespaces: dict[str, str], catalog: Catalog
) -> dict[str, str]:
    """Where people reach the catalog's public API, and Grafana and Prometheus when Tide
    installs them."""
    public = catalog.front_api()
    if config.flavor == "kind":
        # k8s/kind/cluster.yaml maps the NodePorts to these host ports.
        urls = {
            API_URL: "http://localhost:8080",
            GRAFANA_URL: "http://localhost:3000",
            PROMETHEUS_URL: "http://localhost:9090",
        }
    else:
        monitoring = namespaces["monitoring"]
        urls = {
            API_URL: (
                f"kubectl -n {namespaces['apps']} port-forward svc/{public.name} {public.http_port}"
            )
            if public is not None
            else "(the catalog has no API)",
            GRAFANA_URL: (
                f"kubectl -n {monitoring} port-forward svc/tide-monitoring-grafana 3000:80"
            ),
            PROMETHEUS_URL: (
                f"kubectl -n {monitoring} port-forward svc/tide-monitoring-prometheus 9090"
            ),
        }
    if config.operators == "external":
        # The cluster's own Prometheus and Grafana: Tide does not know where they are.
        del urls[GRAFANA_URL], urls[PROMETHEUS_URL]
    return urls
