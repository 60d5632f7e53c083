"""Broker control for chaos experiments: in-process for the suites, over loopback HTTP for
`tide-dev chaos` while `make brokers` runs."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tide_dev.brokers import BrokerSession
from tide_dev.errors import HarnessError


class HarnessControl:
    """Stops, starts or restarts a broker this session started (`tide_dev.chaos.BrokerControl`)."""

    def __init__(self, session: BrokerSession) -> None:
        self.session = session

    def __call__(self, broker: str, action: str) -> None:
        servers = {
            "kafka": self.session.kafka,
            "rabbitmq": self.session.rabbitmq,
            "postgres": self.session.postgres,
        }
        if broker not in servers or action not in ("stop", "start", "restart"):
            raise ValueError(f"unknown broker control {broker}/{action}")
        server = servers[broker]
        if server is None:
            raise HarnessError(
                broker,
                reason="this experiment stops the broker, so it needs the one the harness started",
                fix=f"unset the TIDE_* variable that points at your own {broker}",
            )
        getattr(server, action)()


def serve(control: HarnessControl) -> tuple[ThreadingHTTPServer, str]:
    """`POST /<broker>/<stop|start|restart>` on a free loopback port; returns the server and URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            broker, _, action = self.path.strip("/").partition("/")
            try:
                control(broker, action)
            except (ValueError, HarnessError) as exc:
                self._answer(400, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who decides
                self._answer(500, f"{type(exc).__name__}: {exc}")
            else:
                self._answer(200, f"{broker} {action}: done")

        def _answer(self, status: int, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # the brokers' own logs say what happened

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="broker-control", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
