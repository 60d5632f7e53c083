"""Container images built here, as `docker save` archives a containerd can import."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

from tide_dev.process import require

PAUSE_SOURCE = Path(__file__).parent / "tools" / "pause.c"


def _tar(entries: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of `entries` (path -> content, mode)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (data, mode) in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive(
    name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], out: Path
) -> Path:
    """A one-layer image `name` holding `files` (path -> content, mode), in the layout
    `docker save` writes (manifest.json, the config, the layer)."""
    layer = _tar(files)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Entrypoint": entrypoint},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }).encode()  # fmt: skip
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}])
    out.write_bytes(_tar({"layer.tar": (layer, 0o644), config_name: (config, 0o644),
                          "manifest.json": (manifest.encode(), 0o644)}))  # fmt: skip
    return out


def pause_image(name: str, workdir: Path) -> Path:
    """The pause image, its program compiled static from tools/pause.c."""
    binary = workdir / "pause"
    subprocess.run([require("gcc"), "-static", "-O2", "-o", str(binary), str(PAUSE_SOURCE)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    return archive(name, {"pause": (binary.read_bytes(), 0o755)}, ["/pause"], workdir / "pause.tar")
