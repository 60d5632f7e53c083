"""Run a workload's container as the kubelet would: its command, env, user, mounts and limits."""

from __future__ import annotations

import json
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.deploy.apiserver import pod_from_template
from tests.harness.docker import docker
from tide.waiting import wait_until

# No Confluent-compatible registry installs here (README, "Schema registry"): services run
# without one and validate against the schemas they ship; the registration Job must fail
# saying which registry it could not reach.
REGISTRY_VARIABLE = "TIDE_SCHEMA_REGISTRY_URL"
READY_WITHIN_S = 120
JOB_WITHIN_S = 180

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i?)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS.get(unit or "", 1)


def _cpus(quantity: str) -> str:
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


@dataclass
class Workload:
    """One container of a Deployment or Job, with the pod it runs in."""

    kind: str
    namespace: str
    name: str
    pod: dict[str, Any]
    container: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    def probe_url(self, probe: str) -> str | None:
        """Where the kubelet's HTTP probe would knock (host networking: loopback)."""
        action = self.container.get(probe, {}).get("httpGet")
        if action is None:
            return None
        port = action["port"]
        if isinstance(port, str):
            (port,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == port]
        return f"http://127.0.0.1:{port}{action['path']}"


def workloads(objects: list[dict[str, Any]], image_prefix: str) -> list[Workload]:
    found = []
    for document in objects:
        pod = pod_from_template(document)
        if pod is None:
            continue
        for container in pod["spec"]["containers"]:
            if container["image"].startswith(image_prefix):
                metadata = document["metadata"]
                found.append(
                    Workload(
                        document["kind"], metadata["namespace"], metadata["name"], pod, container
                    )
                )
    return found


# (namespace, name) -> the object's data: a Secret's decoded, or a ConfigMap's.
SecretReader = Callable[[str, str], dict[str, str]]


def _point_at_loopback(value: str, loopback: dict[str, str]) -> str:
    for in_cluster, here in loopback.items():
        value = value.replace(in_cluster, here)
    return value


def environment(
    workload: Workload, secrets: SecretReader, loopback: dict[str, str], drop: set[str]
) -> dict[str, str]:
    """The container's env with secret references resolved from the API server's Secrets."""
    env = {}
    for variable in workload.container.get("env", []):
        if variable["name"] in drop:
            continue
        if "value" in variable:
            value = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            secret = secrets(workload.namespace, ref["name"])
            assert ref["key"] in secret, f"{workload}: Secret {ref['name']} has no key {ref['key']}"
            value = secret[ref["key"]]
        env[variable["name"]] = _point_at_loopback(value, loopback)
    return env


def run_arguments(
    workload: Workload,
    env: dict[str, str],
    secrets: SecretReader,
    scratch: Path,
    config_maps: SecretReader,
) -> list[str]:
    """`docker run` flags that reproduce the pod's security context, volumes and limits."""
    pod_context = workload.pod["spec"].get("securityContext", {})
    context = {**pod_context, **workload.container.get("securityContext", {})}
    args = ["--network=host"]
    if "runAsUser" in context:
        args.append(
            f"--user={context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"
        )
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if "ALL" in context.get("capabilities", {}).get("drop", []):
        args.append("--cap-drop=ALL")
    if context.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    limits = workload.container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args.append(f"--memory={_bytes(limits['memory'])}")
    if "cpu" in limits:
        args.append(f"--cpus={_cpus(limits['cpu'])}")
    args += _volume_flags(workload, secrets, config_maps, scratch)
    for name, value in env.items():
        args.append(f"--env={name}={value}")
    if workload.container.get("command"):
        args.append(f"--entrypoint={workload.container['command'][0]}")
    return args


def _volume_flags(
    workload: Workload, secrets: SecretReader, config_maps: SecretReader, scratch: Path
) -> list[str]:
    """emptyDir as a tmpfs of its size limit; a Secret's or ConfigMap's keys as read-only
    files."""
    flags = []
    volumes = {v["name"]: v for v in workload.pod["spec"].get("volumes", [])}
    for mount in workload.container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            size = _bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            flags.append(f"--tmpfs={mount['mountPath']}:size={size},mode=1777")
        elif "secret" in volume or "configMap" in volume:
            if "secret" in volume:
                source = volume["secret"]
                data = secrets(workload.namespace, source["secretName"])
            else:
                source = volume["configMap"]
                data = config_maps(workload.namespace, source["name"])
            directory = Path(tempfile.mkdtemp(dir=scratch))
            for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                (directory / item["path"]).write_text(data[item["key"]])
                (directory / item["path"]).chmod(0o644)
            directory.chmod(0o755)
            flags.append(f"--volume={directory}:{mount['mountPath']}:ro")
        else:
            raise AssertionError(f"{workload}: volume {mount['name']} of an unknown kind")
    return flags


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 400)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Container:
    """A started container, named for its workload."""

    name: str

    def state(self) -> dict[str, Any]:
        result = docker("inspect", "--format", "{{json .State}}", self.name)
        return dict(json.loads(result.stdout))

    def exit_reason(self) -> str | None:
        state = self.state()
        return None if state["Running"] else f"exited with code {state['ExitCode']}"

    def logs(self, lines: int = 30) -> str:
        result = docker("logs", "--tail", str(lines), self.name, check=False)
        return (result.stdout + result.stderr).strip()

    def wait_ready(self, url: str, timeout: float) -> None:
        wait_until(
            lambda: http_ok(url),
            timeout=timeout,
            what=f"{url} answering 2xx",
            interval=0.5,
            alive=self.exit_reason,
        )

    def stop(self, grace: int) -> int:
        """SIGTERM, as the kubelet sends it, then the exit code once the process is done."""
        docker("stop", f"--time={grace}", self.name, timeout=grace + 30)
        return int(self.state()["ExitCode"])

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


def start(workload: Workload, image: str, flags: list[str], name: str) -> Container:
    command = workload.container.get("command", [])[1:] + workload.container.get("args", [])
    docker("rm", "--force", name, check=False)
    docker("run", "--detach", f"--name={name}", *flags, image, *command)
    return Container(name)


def run_job(workload: Workload, flags: list[str], image: str, name: str) -> tuple[int, str]:
    """Run a Job's container to its end: its exit code and the tail of its log."""
    container = start(workload, image, flags, name)
    try:
        wait_until(
            lambda: container.exit_reason() is not None,
            timeout=JOB_WITHIN_S,
            what=f"{workload} completed",
            interval=0.5,
        )
        return int(container.state()["ExitCode"]), container.logs()
    finally:
        container.remove()
