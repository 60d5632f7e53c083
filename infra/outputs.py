"""Names of the stack outputs; tests and `make up` import these, never retype them."""

API_URL = "apiUrl"
GRAFANA_URL = "grafanaUrl"
GRAFANA_ADMIN_PASSWORD = "grafanaAdminPassword"  # noqa: S105 - an output name, not a password
PROMETHEUS_URL = "prometheusUrl"
KAFKA_BOOTSTRAP = "kafkaBootstrap"
SCHEMA_REGISTRY_URL = "schemaRegistryUrl"
NAMESPACES = "namespaces"
