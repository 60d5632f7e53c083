"""Docker from Debian's docker.io: the daemon, a base image made by debootstrap, Tide's image.

No container registry is reachable here, so nothing is pulled: the base image is
Debian bookworm (Python 3.11, as the upstream `python:3.11-slim-bookworm`)
bootstrapped from the Debian mirror and imported, and `services/Dockerfile` is
built on it through its `PYTHON_IMAGE` build argument. Users keep the default.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tide.waiting import wait_until
from tide_dev.errors import HarnessError
from tide_dev.process import ManagedProcess, require

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "tide-harness-base:bookworm"
# What the image's build stage runs (`python -m venv`, pip over HTTPS).
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# This machine's own trust anchors: the build reaches PyPI through them, as the host does.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# The Debian client talks the daemon's API; a newer client on PATH would insist on buildx.
_ENV = {**os.environ, "DOCKER_BUILDKIT": "0"}


def docker(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require("docker"), *args],
        capture_output=True,
        text=True,
        check=False,
        env=_ENV,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise HarnessError(
            "docker", reason=f"docker {' '.join(args[:3])} failed: {result.stderr.strip()[-2000:]}"
        )
    return result


def _daemon_answers() -> bool:
    return docker("info", check=False, timeout=30).returncode == 0


class DockerDaemon:
    """The Docker daemon: the running one if there is one, else `dockerd` started (as root)."""

    name = "Docker"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._process: ManagedProcess | None = None

    def start(self, timeout: float = 60.0) -> None:
        if _daemon_answers():
            return
        if os.geteuid() != 0:
            raise HarnessError(
                self.name,
                reason="no Docker daemon answers and only root can start one",
                fix="sudo systemctl start docker   (or run the tests as root)",
            )
        self._process = ManagedProcess(
            "dockerd",
            [require("dockerd"), f"--pidfile={self.workdir / 'dockerd.pid'}"],
            log=self.workdir / "dockerd.log",
        )
        self._process.start()
        try:
            wait_until(
                _daemon_answers,
                timeout=timeout,
                what="dockerd answering `docker info`",
                interval=0.5,
                alive=self._process.exit_reason,
            )
        except (TimeoutError, RuntimeError) as exc:
            self.stop()
            raise HarnessError(self.name, reason=str(exc), log=self._process.log) from exc

    def stop(self) -> None:
        """Stops the daemon only if this harness started it."""
        if self._process is not None:
            self._process.stop(timeout=30)


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def _as_root(argv: list[str]) -> list[str]:
    """debootstrap and chroot need root; elsewhere (a CI runner) sudo without a password."""
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def base_image() -> str:
    """Debian bookworm with Python 3.11, made once by debootstrap and kept by the daemon."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    debootstrap = require("debootstrap", search=["/usr/sbin"])
    rootfs = Path(tempfile.mkdtemp(prefix="tide-rootfs-"))
    try:
        result = subprocess.run(
            _as_root(
                [
                    debootstrap,
                    "--variant=minbase",
                    f"--include={BASE_PACKAGES}",
                    "bookworm",
                    str(rootfs),
                    DEBIAN_MIRROR,
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if result.returncode != 0:
            raise HarnessError(
                "debootstrap", reason=f"bootstrapping bookworm failed: {result.stdout[-2000:]}"
            )
        anchors = [str(anchor) for anchor in HOST_CA_DIR.glob("*.crt")]
        if anchors:
            target = str(rootfs / "usr/local/share/ca-certificates")
            subprocess.run(_as_root(["cp", *anchors, target]), capture_output=True, check=True)
        subprocess.run(
            _as_root(["chroot", str(rootfs), "update-ca-certificates"]),
            capture_output=True,
            check=True,
        )
        scratch = [str(rootfs / p) for p in ("var/cache/apt/archives", "var/lib/apt/lists")]
        subprocess.run(_as_root(["rm", "-rf", *scratch]), capture_output=True, check=True)
        tar_argv = _as_root(["tar", "-C", str(rootfs), "-c", "."])
        with subprocess.Popen(tar_argv, stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                [require("docker"), "import", "-", BASE_IMAGE],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
                env=_ENV,
            )
        if imported.returncode != 0:
            raise HarnessError("docker import", reason=imported.stderr.strip())
    finally:
        subprocess.run(_as_root(["rm", "-rf", str(rootfs)]), capture_output=True, check=False)
    return BASE_IMAGE


@contextlib.contextmanager
def service_image(tag: str) -> Iterator[str]:
    """Tide's image built as `tag`, with a Docker daemon answering while it is in use."""
    daemon = DockerDaemon(Path(tempfile.mkdtemp(prefix="tide-docker-")))
    daemon.start()
    try:
        yield build_service_image(tag)
    finally:
        daemon.stop()


def build_service_image(tag: str) -> str:
    """`services/Dockerfile` built on the debootstrap base, tagged `tag`."""
    dockerfile = ROOT / "services" / "Dockerfile"
    return build_image(tag, ROOT, dockerfile=dockerfile, PYTHON_IMAGE=base_image())


def build_image(tag: str, context: Path, *, dockerfile: Path | None = None,
                **build_args: str) -> str:  # fmt: skip
    """The image of `context` (its own Dockerfile unless `dockerfile`), tagged `tag`; the
    build reaches PyPI through the host's network, as the host does."""
    file_args = ["--file", str(dockerfile)] if dockerfile else []
    arg_args = [a for name, value in build_args.items()
                for a in ("--build-arg", f"{name}={value}")]  # fmt: skip
    docker("build", "--quiet", "--network=host", *file_args, *arg_args, "--tag", tag,
           str(context), timeout=900)  # fmt: skip
    return tag
