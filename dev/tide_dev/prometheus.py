"""Prometheus (Debian's `prometheus`) with a given scrape config and rule groups, and its
HTTP API: instant queries, alerts, targets."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from tide_dev.errors import HarnessError
from tide_dev.ports import free_port
from tide_dev.process import ManagedProcess, ensure_free, require


class PrometheusServer:
    """One Prometheus on 127.0.0.1, its data and config under `workdir`."""

    name = "Prometheus"

    def __init__(
        self,
        workdir: Path,
        *,
        scrape_configs: list[dict[str, Any]],
        rule_groups: list[dict[str, Any]],
        interval: str = "15s",
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.scrape_configs = scrape_configs
        self.rule_groups = rule_groups
        self.interval = interval
        self._process: ManagedProcess | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        rules = self.workdir / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": self.interval,
                        "evaluation_interval": self.interval,
                    },
                    "rule_files": [str(rules)],
                    "scrape_configs": self.scrape_configs,
                },
                sort_keys=False,
            )
        )
        return config

    def start(self, timeout: float = 60.0) -> None:
        ensure_free(self.port, self.name)
        binary = require("prometheus", search=["/usr/bin"])
        config = self._write_config()
        checked = self._check(config)
        if checked:
            raise HarnessError(self.name, reason=f"promtool check config failed:\n{checked}")
        self._process = ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
            ],
            log=self.workdir / "prometheus.log",
        )
        self._process.start_serving(
            self._ready,
            server=self.name,
            what=f"Prometheus ready on {self.url}",
            timeout=timeout,
            fix="apt-get install -y prometheus (make system-deps)",
        )

    def _check(self, config: Path) -> str:
        promtool = require("promtool", search=["/usr/bin"])
        done = subprocess.run(
            [promtool, "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return "" if done.returncode == 0 else done.stdout + done.stderr

    def _ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def _get(self, path: str, **params: str) -> Any:
        response = self._http.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} {params}: {body.get('error', response.text)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now."""
        result: list[dict[str, Any]] = self._get("/api/v1/query", query=expr)["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every pending and firing alert, with its labels, state and activeAt."""
        found: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return found

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self._get("/api/v1/targets")["activeTargets"]
        return active

    def stop(self) -> None:
        self._http.close()
        if self._process is not None:
            self._process.stop(timeout=30)
