"""A private PostgreSQL instance from Debian's packages: own data directory, port and socket."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from tide.store.grants import database_services, grant, role_name
from tide.topology import Catalog
from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import (
    ManagedProcess,
    ensure_free,
    owned_dir,
    owned_file,
    require,
    run_as,
)

# Debian keeps the server binaries out of PATH, one directory per major version.
SEARCH = sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)


class PostgresServer:
    """PostgreSQL on 127.0.0.1 with a `tide` superuser and database, password-authenticated."""

    name = "PostgreSQL"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        pods: str | None = None,
        pods_range: str = "",
    ) -> None:
        """`pods`: an address a real node's pods reach, where the server also listens and
        admits the pods of `pods_range` with a password."""
        if pods is not None and not pods_range:
            raise ValueError("a PostgreSQL that listens for pods needs their address range")
        self.workdir = workdir
        self.pods = pods
        self.pods_range = pods_range
        self.port = port or free_port()
        self.password = password or secrets.token_hex(12)
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.user = run_as("postgres")
        # The services' role passwords derive from this, so that every stack run on this
        # server gives a role the same one and never cuts another stack's sessions off.
        self._roles_key = secrets.token_bytes(16)
        self._process: ManagedProcess | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://tide:{self.password}@127.0.0.1:{self.port}/tide"

    def _initdb(self) -> None:
        initdb = require("initdb", search=SEARCH)
        owned_dir(self.workdir, self.user)
        pwfile = owned_file(self.workdir / "pwfile", self.password + "\n", self.user)
        step = ManagedProcess(
            "initdb",
            [
                initdb,
                "-D",
                str(self.data),
                "-U",
                "tide",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                # A test cluster dies with the session; syncing it to disk only costs time.
                "--no-sync",
            ],
            log=self.workdir / "initdb.log",
            user=self.user,
        )
        step.start()
        wait_until(lambda: step.exit_reason() is not None, timeout=120, what="initdb")
        if step.exit_reason() != "initdb exited with code 0":
            raise HarnessError(self.name, reason="initdb failed", log=step.log)

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster on first start, run the server, create database `tide`."""
        ensure_free(self.port, self.name)
        postgres = require("postgres", search=SEARCH)
        if not self.data.exists():
            self._initdb()
            if self.pods is not None:
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.pods_range} scram-sha-256\n")
        listen = "127.0.0.1" if self.pods is None else f"127.0.0.1,{self.pods}"
        sockets = self.workdir / "sockets"
        owned_dir(sockets, self.user)
        self._process = ManagedProcess(
            "postgres",
            [
                postgres,
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(sockets),
                "-c",
                f"listen_addresses={listen}",
                "-c",
                "max_connections=200",
            ],
            log=self.log,
            user=self.user,
        )
        self._process.start_serving(
            self._accepts_connections,
            server=self.name,
            what=f"PostgreSQL accepting connections on 127.0.0.1:{self.port}",
            timeout=timeout,
            fix="apt-get install -y postgresql; or set TIDE_POSTGRES_DSN to a running server",
        )
        self._create_database()

    def _admin_dsn(self) -> str:
        return f"postgresql://tide:{self.password}@127.0.0.1:{self.port}/postgres"

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self._admin_dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'tide'").fetchone()
            if exists is None:
                conn.execute("CREATE DATABASE tide")

    def stop(self) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to
        # leave; SIGINT is "fast": it disconnects them and shuts down cleanly.
        if self._process is not None and self._process.exit_reason() is None:
            self._process.signal(signal.SIGINT)
            try:
                wait_until(
                    lambda: self._process is not None and self._process.exit_reason() is not None,
                    timeout=30,
                    what="PostgreSQL fast shutdown",
                )
            except TimeoutError:
                self._process.kill()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def set_password(self, password: str) -> None:
        """The `tide` role's new password, as CloudNativePG sets the owner's from its Secret."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE tide PASSWORD {}").format(sql.Literal(password)))
        self.password = password

    def ensure_role(self, name: str, password: str) -> str:
        """A login role `name` with `password`, made or updated as CloudNativePG's instance
        manager reconciles a managed role from its Secret; its DSN to the `tide` database."""
        role, secret = sql.Identifier(name), sql.Literal(password)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = sql.SQL("ALTER ROLE" if exists else "CREATE ROLE")
            conn.execute(sql.SQL("{} {} LOGIN PASSWORD {}").format(verb, role, secret))
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/tide"

    def service_roles(self, catalog: Catalog) -> dict[str, dict[str, str]]:
        """Each of the catalog's database services as its own role, made as CloudNativePG
        makes the managed roles and granted as the platform's migrate Job grants (migrate
        first): service -> the environment that connects it as that role."""
        environments = {}
        for service in database_services(catalog):
            role = role_name(service)
            password = hmac.new(self._roles_key, role.encode(), hashlib.sha256).hexdigest()
            environments[service] = {"TIDE_POSTGRES_DSN": self.ensure_role(role, password)}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            grant(conn, catalog)
        return environments

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start on the same data directory and port."""
        self.stop()
        self.start(timeout=timeout)
