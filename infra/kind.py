"""`make up` and `make down`: Tide on a local kind cluster, with a local Pulumi state.

up:   kind cluster (k8s/kind/cluster.yaml) if missing -> build the image, `kind load` it ->
      `pulumi up --stack kind` (file backend in .pulumi/, generated passphrase) -> wait until
      every workload and custom resource is Ready -> print the endpoints and next steps.
down: `pulumi destroy --stack kind` (the program orders topics before the operator),
      then delete the cluster.

Each step is idempotent, so a second `make up` only converges. The CLIs come from ./bin
(the Makefile installs kind, pulumi and kubectl there at pinned versions).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra import outputs
from infra.components.kafka_users import OPERATOR, kafka_credentials_secret
from infra.image import source_digest
from infra.local_stack import LocalStack, PulumiError
from infra.readiness import CUSTOM_READY, Pending, condition_pending, workload_pending
from tide.auth import API_KEY_HEADER

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin"
CLUSTER_CONFIG = ROOT / "k8s" / "kind" / "cluster.yaml"
STATE = ROOT / ".pulumi"
STACK = "kind"

app = typer.Typer(help="Tide on a local kind cluster.", no_args_is_help=True)
console = Console()


class UpError(RuntimeError):
    """A step of `make up` failed; the message says which and what to do."""


def _tool(name: str) -> str:
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise UpError(f"{name} is missing: run `make cluster-tools` (make up does it)")
    return found


def _run(*argv: str, env: dict[str, str] | None = None, capture: bool = False) -> str:
    done = subprocess.run(argv, env=env, check=False, text=True, capture_output=capture, cwd=ROOT)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()[-2000:] if capture else ""
        raise UpError(f"`{' '.join(argv)}` failed with exit code {done.returncode}\n{detail}")
    return done.stdout or ""


def _cluster_name() -> str:
    return str(yaml.safe_load(CLUSTER_CONFIG.read_text())["name"])


def _host_ports() -> list[int]:
    nodes = yaml.safe_load(CLUSTER_CONFIG.read_text())["nodes"]
    return [m["hostPort"] for node in nodes for m in node.get("extraPortMappings", [])]


def check_docker() -> None:
    if shutil.which("docker") is None:
        raise UpError("Docker is not installed: kind runs the cluster in Docker containers")
    done = subprocess.run(["docker", "info"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise UpError(
            "Docker is not running (or this user may not use it): "
            + done.stderr.strip().splitlines()[-1]
        )


def check_ports() -> None:
    taken = []
    for port in _host_ports():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                taken.append(port)
    if taken:
        raise UpError(
            f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 are in use; kind maps them from "
            f"{CLUSTER_CONFIG.relative_to(ROOT)}. Stop what listens there "
            "(ss -ltnp) or change hostPort in that file."
        )


def ensure_cluster() -> None:
    name = _cluster_name()
    existing = _run(_tool("kind"), "get", "clusters", capture=True).split()
    if name in existing:
        console.print(f"[green]✓[/] kind cluster {name} exists")
        return
    check_ports()
    console.print(f"creating kind cluster {name} from {CLUSTER_CONFIG.relative_to(ROOT)}")
    _run(_tool("kind"), "create", "cluster", "--config", str(CLUSTER_CONFIG), "--wait", "180s")


def load_image() -> None:
    # Pulumi.kind.yaml asks for tag `source`: the program resolves it to this same digest.
    image = f"tide:{source_digest()}"
    console.print(f"building {image} from services/Dockerfile")
    _run("docker", "build", "--tag", image, "--file", "services/Dockerfile", ".")
    _run(_tool("kind"), "load", "docker-image", image, "--name", _cluster_name())
    console.print(f"[green]✓[/] {image} loaded into kind")


def local_stack(home: Path = STATE) -> LocalStack:
    """The kind stack, its state, passphrase and generated config under `.pulumi/`."""
    return LocalStack(STACK, home, pulumi=_tool("pulumi"), path=(BIN,))


def pulumi_up(stack: LocalStack) -> dict[str, Any]:
    stack.ensure()
    # --refresh: a cluster recreated outside `make down` (kind delete cluster, a Docker
    # reset) has none of the objects the state remembers; a refresh finds them gone and
    # the update creates them again, where a plain `up` would see nothing to do.
    stack.run("up", "--stack", STACK, "--yes", "--skip-preview", "--refresh", "--non-interactive")
    return stack.outputs()


def stack_outputs() -> dict[str, Any]:
    """The kind stack's outputs (namespaces, endpoints), secrets shown."""
    stack = local_stack()
    stack.write_project()
    return stack.outputs()


def pending(namespaces: list[str]) -> list[Pending]:
    """Everything in Tide's namespaces that is not Ready yet."""
    from kubernetes import client, config  # noqa: PLC0415 - only when a cluster is at hand

    config.load_kube_config(context=f"kind-{_cluster_name()}")  # type: ignore[no-untyped-call]
    apps = client.AppsV1Api()
    custom = client.CustomObjectsApi()
    found: list[Pending | None] = []
    for namespace in namespaces:
        for deployment in apps.list_namespaced_deployment(namespace).items:
            found.append(workload_pending("Deployment", deployment.to_dict()))
        for sts in apps.list_namespaced_stateful_set(namespace).items:
            found.append(workload_pending("StatefulSet", sts.to_dict()))
        for group, version, plural, condition in CUSTOM_READY:
            try:
                listed = custom.list_namespaced_custom_object(group, version, namespace, plural)
            except client.ApiException as exc:
                if exc.status == 404:  # that operator's CRDs are not installed yet
                    found.append(Pending(plural, namespace, "-", "CRD not installed yet"))
                    continue
                raise
            items: list[dict[str, Any]] = listed["items"]  # type: ignore[index]
            found += [condition_pending(item["kind"], condition, item) for item in items]
    return [p for p in found if p is not None]


def last_events(item: Pending, limit: int = 5) -> list[str]:
    from kubernetes import client  # noqa: PLC0415

    events = client.CoreV1Api().list_namespaced_event(item.namespace).items
    related = [
        e for e in events if e.involved_object.name and e.involved_object.name.startswith(item.name)
    ]
    related.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return [f"{e.type} {e.reason}: {e.message}" for e in related[-limit:]]


def wait_ready(namespaces: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    left = pending(namespaces)
    with console.status("waiting for the platform to be Ready") as status:
        while left:
            if time.monotonic() > deadline:
                lines = []
                for item in left[:10]:
                    lines.append(f"  {item}")
                    lines += [f"      {event}" for event in last_events(item)]
                raise UpError(
                    f"not Ready after {timeout_s:.0f} s ({len(left)} left):\n" + "\n".join(lines)
                )
            status.update(f"waiting for {len(left)} to be Ready, e.g. {left[0]}")
            time.sleep(5)  # polling the API server between checks, bounded by the deadline
            left = pending(namespaces)
    console.print("[green]✓[/] every workload and custom resource is Ready")


def print_endpoints(stack: dict[str, Any]) -> None:
    table = Table("what", "where", title="Tide is up")
    table.add_row("video-service API", stack[outputs.API_URL])
    keys = stack.get(outputs.API_KEYS, {})
    for client, key in keys.items():
        table.add_row(f"API key of {client}", f"{key} (header {API_KEY_HEADER})")
    table.add_row("Grafana (admin)", stack[outputs.GRAFANA_URL])
    table.add_row("Grafana password", stack[outputs.GRAFANA_ADMIN_PASSWORD])
    table.add_row("Prometheus", stack[outputs.PROMETHEUS_URL])
    table.add_row("Kafka from the host", "localhost:30092 (SCRAM user tide-operator)")
    console.print(table)
    apps = stack[outputs.NAMESPACES]["apps"]
    console.print(
        "next:\n"
        f"  curl -X POST {stack[outputs.API_URL]}/v1/events -H 'content-type: application/json'"
        + "".join(f" -H '{API_KEY_HEADER}: {key}'" for key in list(keys.values())[:1])
        + ' -d \'{"type":"video.watch.started","data":{"user_id":"u1","video_id":"v1",'
        '"session_id":"s1"}}\'\n'
        f"  kubectl -n {apps} get scaledobjects,deployments\n"
        f'  eval "$(.venv/bin/python -m infra.kind env)" && .venv/bin/tide status\n'
        "  make chaos      # the cluster chaos suite\n"
        "  make down       # destroy the stack and delete the cluster"
    )


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="seconds to wait for Ready")] = 1200,
) -> None:
    """Create the cluster if missing, load the image, pulumi up, wait until Ready."""
    try:
        check_docker()
        ensure_cluster()
        load_image()
        stack = pulumi_up(local_stack())
        wait_ready(sorted(stack[outputs.NAMESPACES].values()), timeout)
    except (UpError, PulumiError) as exc:
        console.print(f"[red]make up failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    print_endpoints(stack)


@app.command()
def down() -> None:
    """Destroy the stack (if any), then delete the kind cluster."""
    try:
        kind = _tool("kind")
        name = _cluster_name()
        if name in _run(kind, "get", "clusters", capture=True).split() and STATE.exists():
            stack = local_stack()
            stack.ensure()
            stack.run("destroy", "--stack", STACK, "--yes", "--non-interactive", "--skip-preview")
        _run(kind, "delete", "cluster", "--name", name)
    except (UpError, PulumiError) as exc:
        console.print(f"[red]make down failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/] stack destroyed, cluster {name} deleted")


@app.command()
def env() -> None:
    """Print the TIDE_* exports that reach the kind cluster from the host (the operator user)."""
    import base64  # noqa: PLC0415

    from kubernetes import client, config  # noqa: PLC0415

    # The namespace the stack made (its prefix is a setting), not a name assumed here.
    apps = stack_outputs()[outputs.NAMESPACES]["apps"]
    config.load_kube_config(context=f"kind-{_cluster_name()}")  # type: ignore[no-untyped-call]
    secret = client.CoreV1Api().read_namespaced_secret(kafka_credentials_secret(OPERATOR), apps)
    password = base64.b64decode((secret.data or {})["password"]).decode()
    exports = {
        "TIDE_KAFKA_BOOTSTRAP": "localhost:30092",
        "TIDE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TIDE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TIDE_KAFKA_USERNAME": OPERATOR,
        "TIDE_KAFKA_PASSWORD": password,
    }
    for key, value in exports.items():
        print(f"export {key}='{value}'")


if __name__ == "__main__":
    app()
