"""A single-node Apache Kafka in KRaft mode (broker and controller), run from the Maven jars."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient
from infra import components

from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.maven import runtime_classpath
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess, ensure_free, require

# The JMX exporter's rules, the file the cluster's Kafka gets as its `metricsConfig`.
METRICS_RULES = Path(components.__file__).parent / "kafka_metrics.yaml"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
"""


def _cluster_id() -> str:
    # Kafka's own ids are URL-safe base64 of 16 random bytes; a leading "-"
    # would read as a flag to the storage tool, so Kafka never makes one either.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


class KafkaBroker:
    """Apache Kafka on 127.0.0.1 with its own storage; restartable on the same data and port.

    A PLAINTEXT listener serves the tests; a SASL_PLAINTEXT (SCRAM-SHA-512) one serves
    the deploy tier's containers, which run with the cluster's client settings and the
    SCRAM users that tier creates as Strimzi's User Operator would. With `pods`, a second
    SCRAM listener serves a real node's pods: bound to an address they reach, advertised
    as the Service they dial (a name cluster DNS resolves, as Strimzi's bootstrap is).
    """

    name = "Kafka"

    def __init__(
        self, workdir: Path, *, port: int | None = None, pods: tuple[str, str] | None = None
    ) -> None:
        """`pods`: (the address to listen on, the host:port to advertise to pods)."""
        self.workdir = workdir
        self.pods = pods
        self.pods_port = free_port()
        self.port = port or free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port()
        # The JMX exporter agent's /metrics, as Strimzi's brokers serve it on 9404.
        self.metrics_port = free_port()
        self.log = workdir / "server.log"
        self._process: ManagedProcess | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SCRAM-SHA-512 listener; its users are made with the admin API."""
        return f"127.0.0.1:{self.sasl_port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(
                [
                    f"PLAINTEXT://127.0.0.1:{self.port}",
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    *([f"PODS://{self.pods[0]}:{self.pods_port}"] if self.pods else []),
                ]
            ),
            "advertised.listeners": ",".join(
                [
                    f"PLAINTEXT://127.0.0.1:{self.port}",
                    f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}",
                    *([f"PODS://{self.pods[1]}"] if self.pods else []),
                ]
            ),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
                "PODS:SASL_PLAINTEXT"
            ),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            **{
                f"listener.name.{listener}.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
                for listener in ("sasl_plaintext", "pods")
            },
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            # One node: internal topics cannot have more replicas than brokers.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Tests join groups often; the default 3 s delay only slows them down.
            "group.initial.rebalance.delay.ms": "0",
            # As on the cluster (Strimzi config): a topic exists because Tide declared it.
            "auto.create.topics.enable": "false",
        }
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.workdir / "log4j2.properties").write_text(LOG4J2.format(log=self.log))
        return config

    def _java(self, main: str, *args: str, agent: bool = False) -> list[str]:
        java = require("java")
        classpath = runtime_classpath("kafka")
        options = []
        if agent:
            (jar,) = [j for j in classpath.split(":") if "jmx_prometheus_javaagent" in j]
            options.append(f"-javaagent:{jar}=127.0.0.1:{self.metrics_port}:{METRICS_RULES}")
        return [
            java,
            *options,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            classpath,
            main,
            *args,
        ]

    def _format(self, config: Path) -> None:
        storage = ManagedProcess(
            "kafka-storage format",
            self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)),
            log=self.workdir / "format.log",
        )
        storage.start()
        try:
            wait_until(lambda: storage.exit_reason() is not None, timeout=60, what="storage format")
        except TimeoutError as exc:
            storage.kill()
            raise HarnessError(self.name, reason=str(exc), log=storage.log) from exc
        if storage.exit_reason() != "kafka-storage format exited with code 0":
            raise HarnessError(self.name, reason="formatting KRaft storage failed", log=storage.log)
        self._formatted = True

    def start(self, timeout: float = 90.0) -> None:
        """Start the broker (formatting storage the first time) and wait for metadata."""
        ensure_free(self.port, self.name)
        ensure_free(self.controller_port, f"{self.name} controller")
        ensure_free(self.sasl_port, f"{self.name} SASL listener")
        ensure_free(self.metrics_port, f"{self.name} metrics")
        config = self._write_config()
        if not self._formatted:
            self._format(config)
        self._process = ManagedProcess(
            "kafka",
            self._java("kafka.Kafka", str(config), agent=True),
            log=self.workdir / "stdout.log",
        )
        self._process.start_serving(
            self.answers_metadata,
            server=self.name,
            what=f"Kafka answering a metadata request on {self.bootstrap}",
            timeout=timeout,
            interval=0.5,
            fix="check Java 17 (java -version) and the log above; "
            "or point the tests at a running broker with TIDE_KAFKA_BOOTSTRAP=host:port",
            log=self.log,
        )

    def answers_metadata(self) -> bool:
        """One admin metadata call: the broker is up, registered and serving requests."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - any failure here just means "not yet"
            return False
        return len(metadata.brokers) > 0

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=30)

    def kill(self) -> None:
        """SIGKILL the broker: a crash, for chaos tests."""
        if self._process is not None:
            self._process.kill()

    def freeze(self) -> None:
        """SIGSTOP the broker: it takes connections and requests and answers none (a long
        GC pause, a stalled node), so a client's produce is in doubt until `thaw`."""
        if self._process is not None:
            self._process.freeze()

    def thaw(self) -> None:
        if self._process is not None:
            self._process.thaw()

    def restart(self, timeout: float = 90.0) -> None:
        self.stop()
        self.start(timeout=timeout)
