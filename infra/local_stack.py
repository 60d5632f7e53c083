"""A Pulumi stack kept whole in one local directory: state, passphrase, generated config.

`pulumi stack init` and `pulumi config set --secret` write an encryption salt and
encrypted values into `Pulumi.<stack>.yaml`. For a local stack that file would be
the tracked one, and its salt would outlive the state it belongs to: delete
`.pulumi/`, and a new passphrase meets the old salt. So the project Pulumi runs
is generated under the state directory (`<home>/project`): the tracked
`Pulumi.yaml` with `main` pointing back at its program (Tide's `infra/`, or a
team's), and the tracked stack file's config plus what Pulumi and Tide generate
(salt, credential seed). The tracked files are never written, and deleting the
directory starts afresh.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.credentials import SEED_KEY

ROOT = Path(__file__).resolve().parent.parent
SEED = f"tide:{SEED_KEY}"
# What Pulumi or Tide generated into the stack file, carried over when it is rewritten.
_GENERATED = ("encryptionsalt",)


class PulumiError(RuntimeError):
    """A pulumi command failed; the message has the command, its exit code and its output."""


@dataclass
class LocalStack:
    """One stack of a Pulumi project, with a file backend and passphrase under `home`."""

    stack: str
    home: Path
    # The tracked project: its Pulumi.yaml and Pulumi.<stack>.yaml. Tide's by default; a
    # team's program around TidePlatform (examples/orders) runs on Tide's venv the same way.
    source: Path = ROOT
    # Extra stack config (`tide:operators`, ...) over the tracked stack file's.
    overrides: Mapping[str, Any] = field(default_factory=dict)
    pulumi: str = "pulumi"
    # Directories put before PATH for pulumi and its plugins (the CLI's, the venv's).
    path: tuple[Path, ...] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.home / "project"

    @property
    def stack_file(self) -> Path:
        return self.project / f"Pulumi.{self.stack}.yaml"

    def env(self) -> dict[str, str]:
        """A local file backend and a passphrase generated once: no Pulumi account needed."""
        self.home.mkdir(parents=True, exist_ok=True)
        passphrase = self.home / "passphrase"
        if not passphrase.exists():
            passphrase.write_text(secrets.token_urlsafe(32))
            passphrase.chmod(0o600)
        venv_bin = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
        search = [str(p) for p in (*self.path, venv_bin)]
        return {
            **os.environ,
            "PULUMI_BACKEND_URL": f"file://{self.home}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            # The program runs on the venv's Python, which has Tide and the SDK installed.
            "PULUMI_PYTHON_CMD": str(venv_bin / "python"),
            "PATH": os.pathsep.join([*search, os.environ.get("PATH", "")]),
            **self.extra_env,
        }

    def write_project(self) -> None:
        """The tracked project, its program where it is in the work tree."""
        self.project.mkdir(parents=True, exist_ok=True)
        project = yaml.safe_load((self.source / "Pulumi.yaml").read_text())
        project["main"] = str(self.source / project.get("main", "."))
        project["runtime"] = {
            "name": "python",
            "options": {"toolchain": "pip", "virtualenv": str(ROOT / ".venv")},
        }
        (self.project / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))

    def write_stack_file(self, *, fresh: bool = False) -> None:
        """The tracked stack config with the overrides, and what was generated before kept
        (unless `fresh`: a stack that is not in the state starts with nothing generated)."""
        tracked = yaml.safe_load((self.source / f"Pulumi.{self.stack}.yaml").read_text())
        document: dict[str, Any] = {"config": {**tracked["config"], **self.overrides}}
        if self.stack_file.exists() and not fresh:
            before = yaml.safe_load(self.stack_file.read_text()) or {}
            document |= {k: before[k] for k in _GENERATED if k in before}
            if SEED in before.get("config", {}):
                document["config"][SEED] = before["config"][SEED]
        self.stack_file.write_text(yaml.safe_dump(document, sort_keys=False))

    def run(
        self, *args: str, capture: bool = False, check: bool = True, timeout: float | None = None
    ) -> str:
        done = subprocess.run(
            [self.pulumi, *args],
            cwd=self.project,
            env=self.env(),
            check=False,
            text=True,
            capture_output=capture,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            output = (done.stderr or "") + (done.stdout or "") if capture else ""
            # The engine's errors first (they can be anywhere in a long update's output),
            # then the tail for context.
            errors = [line.strip() for line in output.splitlines() if "error:" in line]
            raise PulumiError(
                f"`pulumi {' '.join(args)}` failed with exit code {done.returncode}\n"
                + "\n".join(dict.fromkeys(errors))
                + "\n"
                + output.strip()[-2000:]
            )
        return done.stdout or ""

    def ensure(self) -> None:
        """The project written, the stack created, its credential seed set once."""
        self.write_project()
        listed = json.loads(self.run("stack", "ls", "--json", capture=True) or "[]")
        exists = self.stack in {s["name"] for s in listed}
        self.write_stack_file(fresh=not exists)
        if not exists:
            self.run("stack", "init", self.stack, "--secrets-provider", "passphrase", capture=True)
        config = yaml.safe_load(self.stack_file.read_text()).get("config", {})
        if SEED not in config:
            self.run(
                "config", "set", "--secret", "--stack", self.stack, SEED, secrets.token_hex(32),
                capture=True,
            )  # fmt: skip

    def outputs(self) -> dict[str, Any]:
        shown = self.run(
            "stack", "output", "--stack", self.stack, "--json", "--show-secrets", capture=True
        )
        return dict(json.loads(shown))
