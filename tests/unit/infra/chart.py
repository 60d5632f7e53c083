"""Render charts/tide-service with the real helm binary (built by `make tools`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.unit.infra.program import ROOT

CHART = ROOT / "charts" / "tide-service"
# helm built with `go install` reports an old default; render for a cluster Tide supports.
KUBE_VERSION = "1.33.0"


def helm() -> str:
    local = ROOT / "bin" / "helm"
    found = str(local) if local.exists() else shutil.which("helm")
    assert found, "helm is missing: run `make tools` (it builds helm with `go install`)"
    return found


def render(
    values: dict[str, Any], release: str = "tide", namespace: str = "tide-apps"
) -> list[dict[str, Any]]:
    """`helm template` with these values; the documents it prints."""
    result = subprocess.run(
        [
            helm(),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "-f",
            "-",
        ],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def helm_run(
    *args: str, values: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [helm(), *args, str(CHART), "--kube-version", KUBE_VERSION]
    if values is not None:
        command += ["-f", str(values)]
    if stdin is not None:
        command += ["-f", "-"]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]
