"""Which node each pod of a deployed stack runs on: the real node where its images are, KWOK
where they cannot be had.

The real node holds only images built here (Tide's, the pause image, CoreDNS); upstream
images (the schema registry's, for one) cannot be pulled. A cluster that mixes such
nodes sends pods with taints and node selectors; the stack's own objects carry neither,
so this admission webhook adds them as a cluster's policy engine would: a pod whose
every image the real node holds, and that does not wait on a pod KWOK plays, gets the
real node's toleration and its hostname as node selector; any other pod gets the KWOK
nodes' label as node selector. Nothing else in the pod changes.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness.cluster import KWOK_NODE_ANNOTATION
from tests.harness.controlplane import write_certificates

# The real node's taint: a pod lands there only when this webhook let it.
REAL_NODE_TAINT = {"key": "tide.dev/real-node", "value": "true", "effect": "NoSchedule"}
WEBHOOK = "placement.tide.dev"


class Placement:
    """The webhook server, and the configuration that registers it for every pod created."""

    def __init__(
        self,
        workdir: Path,
        *,
        node: str,
        images: frozenset[str],
        stays_on_kwok: Callable[[dict[str, Any]], bool] = lambda _pod: False,
    ) -> None:
        self.certificates = workdir / "placement-certs"
        self.node = node
        self.images = images
        self.stays_on_kwok = stays_on_kwok
        self._server: ThreadingHTTPServer | None = None

    def runs_on_node(self, pod: dict[str, Any]) -> bool:
        spec = pod["spec"]
        containers = spec.get("containers", []) + spec.get("initContainers", [])
        return all(c["image"] in self.images for c in containers) and not self.stays_on_kwok(pod)

    def patch(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """The JSON patch that places `pod`."""
        # Merged into what the pod has: its own selector and tolerations still hold.
        selector = dict(pod["spec"].get("nodeSelector") or {})
        if not self.runs_on_node(pod):
            selector["type"] = "kwok"  # the label every KWOK node carries (harness.cluster)
            return [{"op": "add", "path": "/spec/nodeSelector", "value": selector}]
        selector["kubernetes.io/hostname"] = self.node
        tolerations = [*(pod["spec"].get("tolerations") or []),
                       {**REAL_NODE_TAINT, "operator": "Equal"}]  # fmt: skip
        return [
            {"op": "add", "path": "/spec/nodeSelector", "value": selector},
            {"op": "add", "path": "/spec/tolerations", "value": tolerations},
        ]

    def start(self) -> None:
        write_certificates(self.certificates, common_name="placement", hosts=["127.0.0.1"])
        placement = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                patch = json.dumps(placement.patch(request["object"])).encode()
                body = json.dumps({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": request["uid"], "allowed": True, "patchType": "JSONPatch",
                                 "patch": base64.b64encode(patch).decode()}}).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass  # one line per pod on stderr says nothing a failure would need

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificates / "tls.crt", self.certificates / "tls.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="placement", daemon=True).start()

    def configuration(self) -> dict[str, Any]:
        """The MutatingWebhookConfiguration: every pod, failing closed, so no pod is placed
        by chance while the webhook is down."""
        assert self._server is not None, "start the webhook first"
        port = self._server.server_address[1]
        ca = base64.b64encode((self.certificates / "ca.crt").read_bytes()).decode()
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK},
            "webhooks": [{
                "name": WEBHOOK,
                "clientConfig": {"url": f"https://127.0.0.1:{port}/place", "caBundle": ca},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            }],
        }  # fmt: skip

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def where(pods: list[dict[str, Any]], nodes: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """ "real" / "kwok" -> the pods bound there, by namespace/name."""
    placed: dict[str, list[str]] = {"real": [], "kwok": []}
    for pod in pods:
        node = nodes.get(pod["spec"].get("node_name") or "")
        if node is None:
            continue
        annotations = node["metadata"].get("annotations") or {}
        kind = "kwok" if KWOK_NODE_ANNOTATION in annotations else "real"
        placed[kind].append(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    return placed
