"""Resolve a Java program's runtime classpath from Maven Central, once, into the cache."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tide_dev.cache import cache_dir
from tide_dev.errors import HarnessError
from tide_dev.process import require

MAVEN_DIR = Path(__file__).parent / "maven"


def runtime_classpath(project: str) -> str:
    """The `:`-joined jar list of `dev/tide_dev/maven/<project>/pom.xml`, resolved by Maven.

    The result is cached per pom content, so a second session starts without Maven.
    """
    pom = MAVEN_DIR / project / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"{project}-{digest}.classpath"
    if cached.exists():
        classpath = cached.read_text().strip()
        if classpath and all(Path(jar).exists() for jar in classpath.split(":")):
            return classpath
    mvn = require("mvn")
    partial = cached.with_suffix(".partial")
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dmaven.repo.local={cache_dir() / 'm2'}",
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={partial}",
    ]
    log = cache_dir() / f"{project}-maven.log"
    with log.open("wb") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not partial.exists():
        raise HarnessError(
            f"Maven resolution of {project}",
            reason=f"mvn exited with {result.returncode}",
            fix="make sure Maven Central is reachable, then run: " + " ".join(command),
            log=log,
        )
    partial.replace(cached)
    return cached.read_text().strip()
