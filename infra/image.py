"""The service image's tag on kind: a digest of what `docker build` copies into it.

`make up` builds `tide:<digest>` and the kind stack asks for tag `source`, which
the program resolves to the same digest: a code change is a new tag, so the
Deployments roll and the Jobs (named by what they run) run again; an unchanged
tree keeps its tag and a second `make up` changes nothing.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What services/Dockerfile copies (COPY lines), relative to the repository root.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "services", "infra")
SOURCE_TAG = "source"


def source_digest(root: Path = ROOT) -> str:
    """Twelve hex digits of sha256 over every file the image is built from, in path order."""
    digest = hashlib.sha256()
    for entry in BUILD_CONTEXT:
        path = root / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc" or ".egg-info" in str(file):
                continue
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


@cache
def context_digest() -> str:
    """This checkout's digest, read once: the program resolves the tag for every service and Job."""
    return source_digest(ROOT)
