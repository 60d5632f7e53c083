"""A private RabbitMQ node from Debian's packages: own node name, ports, epmd and data."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from pathlib import Path

import aio_pika

from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port, is_free
from tide_dev.process import (
    ManagedProcess,
    ensure_free,
    owned_dir,
    owned_file,
    port_is_open,
    require,
    run_as,
)

# Debian's /usr/sbin wrapper switches to the system `rabbitmq` user and its data;
# the real scripts underneath honour the RABBITMQ_* variables set below.
SEARCH = ["/usr/lib/rabbitmq/bin"]
_BIND_ATTEMPTS = 3
_FIX = "apt-get install -y rabbitmq-server; or set TIDE_RABBITMQ_URL to a running one"


class RabbitMQServer:
    """RabbitMQ on 127.0.0.1 with a `tide` user; it never touches the system node."""

    name = "RabbitMQ"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        conf_d: dict[str, str] | None = None,
        login: tuple[str, str] | None = None,
        pods: str | None = None,
    ) -> None:
        """`conf_d`: files loaded after rabbitmq.conf in name order, as from the
        /etc/rabbitmq/conf.d of a cluster operator's pod; `login`: the user that opens
        connections, when conf_d or definitions loaded at boot replace the `tide` user;
        `pods`: an address a real node's pods reach, where a second AMQP listener serves
        them (on `pods_port`)."""
        self.workdir = workdir
        self.pods = pods
        self.pods_port = free_port()
        self.conf_d = conf_d or {}
        self.port = port or free_port()
        self.dist_port = free_port()
        # Our own epmd: the system one (port 4369) may belong to someone else.
        self.epmd_port = free_port()
        # rabbitmq_prometheus's /metrics, as the cluster's RabbitMQ serves it on 15692.
        self.metrics_port = free_port()
        self.password = secrets.token_hex(12)
        self.login = login or ("tide", self.password)
        self.nodename = f"tide{self.port}@localhost"
        self.log = workdir / "log" / f"{self.nodename}.log"
        self.user = run_as("rabbitmq")
        self._process: ManagedProcess | None = None
        self._epmd: ManagedProcess | None = None

    @property
    def url(self) -> str:
        user, password = self.login
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """The environment for the server and for rabbitmqctl against this node."""
        return {
            **os.environ,
            "HOME": str(self.workdir),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.workdir / "mnesia" / "feature_flags"),
            "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.workdir / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(self.workdir / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.workdir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.workdir / "rabbitmq.pid"),
        }

    def _write_config(self) -> None:
        conf_d = self.workdir / "conf.d"
        for directory in (self.workdir, self.workdir / "mnesia", self.workdir / "log", conf_d):
            owned_dir(directory, self.user)
        for name, content in self.conf_d.items():
            owned_file(conf_d / name, content, self.user)
        owned_file(
            self.workdir / "rabbitmq.conf",
            "\n".join(
                [
                    "default_user = tide",
                    f"default_pass = {self.password}",
                    "default_user_tags.administrator = true",
                    "log.console = false",
                    "log.file.level = info",
                    f"listeners.tcp.local = 127.0.0.1:{self.port}",
                    *([f"listeners.tcp.pods = {self.pods}:{self.pods_port}"] if self.pods else []),
                    # A laptop's disk may be fuller than production's: do not block publishers.
                    "disk_free_limit.absolute = 50MB",
                    # Per-queue series (rabbitmq_queue_messages{queue}), as on the cluster.
                    f"prometheus.tcp.port = {self.metrics_port}",
                    "prometheus.tcp.ip = 127.0.0.1",
                    "prometheus.return_per_object_metrics = true",
                    "",
                ]
            ),
            self.user,
        )
        owned_file(self.workdir / "advanced.config", "[].\n", self.user)
        owned_file(self.workdir / "rabbitmq-env.conf", "", self.user)
        owned_file(self.workdir / "enabled_plugins", "[rabbitmq_prometheus].\n", self.user)

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until an AMQP connection opens."""
        ensure_free(self.port, self.name)
        server = require("rabbitmq-server", search=SEARCH)
        self._write_config()
        if self._epmd is None:
            # Run epmd in the foreground ourselves: Erlang would otherwise daemonize
            # one that outlives the session.
            self._epmd = ManagedProcess(
                "epmd",
                [require("epmd", search=["/usr/lib/erlang/bin"]), "-port", str(self.epmd_port)],
                log=self.workdir / "epmd.log",
                user=self.user,
            )
            self._epmd.start()
            wait_until(
                lambda: port_is_open(self.epmd_port),
                timeout=15,
                what=f"epmd listening on port {self.epmd_port}",
                alive=self._epmd.exit_reason,
            )
        for attempt in range(_BIND_ATTEMPTS):
            self._process = ManagedProcess(
                "rabbitmq-server",
                [server],
                log=self.workdir / "stdout.log",
                env=self.env(),
                user=self.user,
            )
            try:
                self._process.start_serving(
                    self._accepts_amqp,
                    server=self.name,
                    what=f"RabbitMQ accepting AMQP on 127.0.0.1:{self.port}",
                    timeout=timeout,
                    interval=0.5,
                    fix=_FIX,
                    log=self.log,
                )
                return
            except HarnessError:
                if attempt + 1 == _BIND_ATTEMPTS or not self._lost_a_side_port():
                    raise
            # Another process bound a side port between our pick and the node's boot:
            # the node stops whole when one listener fails. Clients know only the AMQP
            # port, so the others can move.
            self.pods_port, self.dist_port, self.metrics_port = (free_port() for _ in range(3))
            self._write_config()

    def _lost_a_side_port(self) -> bool:
        """Whether a port the failed boot needed, other than AMQP's, is held by another
        process. The node is gone, so whatever holds one now is not ours. (Asked of the
        ports, not the logs: a taken distribution port stops the node before it logs.)"""
        side = [self.dist_port, self.metrics_port, *([self.pods_port] if self.pods else [])]
        # If the AMQP port is held too, clients cannot be told of a new one: that fails.
        return not port_is_open(self.port) and not all(map(is_free, side))

    def _accepts_amqp(self) -> bool:
        if not port_is_open(self.port):
            return False  # not listening yet: no AMQP attempt, no client error logged

        async def probe() -> bool:
            try:
                connection = await aio_pika.connect(self.url, timeout=2)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
                return False
            await connection.close()
            return True

        return asyncio.run(probe())

    def import_definitions(self, document: dict[str, object]) -> None:
        """Load a definitions document (the catalog's topology) with rabbitmqctl."""
        path = owned_file(
            self.workdir / f"definitions-{abs(hash(json.dumps(document, sort_keys=True)))}.json",
            json.dumps(document),
            self.user,
        )
        ctl = require("rabbitmqctl", search=SEARCH)
        # The CLI looks for the cookie in the system user's home; hand it ours.
        cookie = (self.workdir / ".erlang.cookie").read_text().strip()
        result = subprocess.run(
            [ctl, "-n", self.nodename, "--erlang-cookie", cookie, "import_definitions", str(path)],
            env=self.env(),
            user=self.user,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise HarnessError(
                self.name, reason=f"import_definitions failed: {result.stderr or result.stdout}"
            )

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=60)
            # The Erlang VM may outlive the start script by a moment: wait for the port.
            wait_until(
                lambda: not port_is_open(self.port),
                timeout=30,
                what=f"RabbitMQ releasing port {self.port}",
            )

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start the node on the same port and data (quorum queues survive)."""
        self.stop()
        self.start(timeout=timeout)

    def close(self) -> None:
        """Stop the node, then the epmd that served it."""
        self.stop()
        if self._epmd is not None:
            self._epmd.stop(timeout=10)
