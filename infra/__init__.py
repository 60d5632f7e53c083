"""The Pulumi program that stands up Tide on Kubernetes."""
