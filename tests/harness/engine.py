"""The engine tier's tools, built from the Go module proxy: Pulumi's CLI, language host and
Kubernetes provider, kube-controller-manager, kube-scheduler and KWOK.

`make tools` builds them once into the cache (tests/harness/tools/build-engine.sh).
"""

from __future__ import annotations

from pathlib import Path

from tests.harness.controlplane import KUBE_VERSION
from tide_dev.cache import built_tool, cache_dir

# The CLI: the newest pulumi/pkg release the proxy serves (PyPI's SDK stops at 3.272.0;
# pyproject.toml pins that). `make up` downloads the same CLI release.
PULUMI_VERSION = "v3.276.0"
# pulumi-kubernetes 4.25.0's provider module: its release commit as a pseudo-version (the
# provider/v4 module has no tagged versions on the proxy), stamped with the release it is.
PROVIDER_MODULE_VERSION = "v4.0.0-20260115033456-f47bc2d6f199"
PROVIDER_VERSION = "4.25.0"
# The Python language host left the sdk/v3 module after 3.79.0; its gRPC protocol did not.
LANGUAGE_HOST_VERSION = "v3.79.0"
KWOK_VERSION = "v0.7.0"
BINARIES = (
    "pulumi",
    "pulumi-language-python",
    "pulumi-language-python-exec",
    "pulumi-resource-kubernetes",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)


def tools_dir() -> Path:
    return cache_dir() / "tools" / f"engine-pulumi-{PULUMI_VERSION}-k8s-{PROVIDER_VERSION}"


def binary(name: str) -> str:
    return built_tool(tools_dir(), name)


def build_arguments() -> list[str]:
    """What tests/harness/tools/build-engine.sh takes, in its order."""
    return [
        PULUMI_VERSION,
        PROVIDER_MODULE_VERSION,
        PROVIDER_VERSION,
        LANGUAGE_HOST_VERSION,
        KUBE_VERSION,
        KWOK_VERSION,
        str(tools_dir()),
    ]


if __name__ == "__main__":
    print(" ".join(build_arguments()))
