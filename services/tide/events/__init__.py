"""Events: the CloudEvents envelope and the JSON Schema of each event type."""
