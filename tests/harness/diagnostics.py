"""What a cluster says about pods that did not get where a test waited for them to be."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def describe_pods(core: client.CoreV1Api, namespace: str, selector: str = "") -> str:
    """Each pod's node, phase, unmet conditions, container states, events and log tail:
    what `kubectl describe` and `kubectl logs` would show a user."""
    lines: list[str] = []
    for item in core.list_namespaced_pod(namespace, label_selector=selector).items:
        pod: dict[str, Any] = item.to_dict()
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        lines.append(f"pod {namespace}/{name} on {pod['spec'].get('node_name')}: "
                     f"{status.get('phase')}")  # fmt: skip
        lines.extend(
            f"  {c['type']}={c['status']} {c.get('reason') or ''} {c.get('message') or ''}"
            for c in status.get("conditions") or []
            if c["status"] != "True"
        )
        for container in status.get("container_statuses") or []:
            lines.append(f"  container {container['name']}: ready={container['ready']} "
                         f"restarts={container['restart_count']} {container['state']}")  # fmt: skip
            try:
                log = str(core.read_namespaced_pod_log(
                    name, namespace, container=container["name"], tail_lines=20))  # fmt: skip
            except client.ApiException as exc:
                log = f"(no log: {exc.reason})"
            lines.extend(f"    | {line}" for line in log.splitlines())
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        lines.extend(f"  event {e.type} {e.reason}: {e.message}" for e in events.items[-10:])
    return "\n".join(lines) or f"no pods in {namespace} matching {selector!r}"
