"""Container images built here, as `docker save` archives a containerd can import."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

from tests.harness.process import require

PAUSE_SOURCE = Path(__file__).parent / "tools" / "pause.c"


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive(
    name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], out: Path
) -> Path:
    """A one-layer image `name` holding `files` (path -> content, mode), in the layout
    `docker save` writes (manifest.json, the config, the layer)."""
    layer = _layer(files)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}])
    with tarfile.open(out, "w") as tar:
        for path, content in (("layer.tar", layer), (config_name, config),
                              ("manifest.json", manifest.encode())):  # fmt: skip
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out


def pause_image(name: str, workdir: Path) -> Path:
    """The pause image, its program compiled static from tools/pause.c."""
    binary = workdir / "pause"
    subprocess.run([require("gcc"), "-static", "-O2", "-o", str(binary), str(PAUSE_SOURCE)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return archive(name, {"pause": (binary.read_bytes(), 0o755)}, ["/pause"], workdir / "pause.tar")
