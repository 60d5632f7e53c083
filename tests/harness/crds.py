"""Upstream CustomResourceDefinitions at the versions Tide pins, fetched from package registries.

Nothing upstream is copied into this repository. The Go operators keep their CRD YAML
inside their Go module, fetched through the Go module proxy; Strimzi publishes no CRD
YAML to a registry, so its CRDs are generated from its Java model on Maven Central, the
way Strimzi's own build makes them. Each component's CRDs are fetched once into
`cache_dir() / "crds" / "<component>-<version>"`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import yaml

from tide_dev.cache import cache_dir
from tide_dev.errors import HarnessError
from tide_dev.maven import MAVEN_DIR, runtime_classpath
from tide_dev.process import require

if TYPE_CHECKING:
    from infra.config import Versions

try:  # libyaml parses the half-megabyte Strimzi and Prometheus CRDs many times faster.
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml: slower, same documents.
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class CrdLoader(_SafeLoader):
    """A safe YAML loader that reads a bare `=` as the string Kubernetes reads.

    PyYAML resolves a plain `=` to YAML 1.1's `value` tag, which it cannot construct;
    Prometheus' matcher enums (`matchType: [=, !=, =~, !~]`) hold exactly that.
    """


def _plain_string(loader: CrdLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode), node
    return str(loader.construct_scalar(node))


CrdLoader.add_constructor("tag:yaml.org,2002:value", _plain_string)

# Written last into a component's cache directory: without it the fetch is redone.
COMPLETE = ".complete"
# A module download or a generator run that takes this long is stuck, not slow.
TIMEOUT_SECONDS = 600
CRD_GENERATOR = "io.strimzi.crdgenerator.CrdGenerator"


@dataclass(frozen=True)
class GoModuleCrds:
    """CRD YAML files kept in one directory of a Go module, fetched through the Go module proxy."""

    module: str
    version: str
    directory: str
    # The files double as Helm templates whose label values are template text; labels
    # carry no meaning for a CRD, so they are dropped rather than rendered.
    templated_labels: bool = False


@dataclass(frozen=True)
class StrimziCrdRun:
    """One CrdGenerator invocation from Strimzi's api/pom.xml: the API versions served and kinds."""

    api_versions: str
    storage_version: str
    # (class under io.strimzi.api.kafka.model, file name Strimzi gives the CRD in packaging/)
    kinds: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StrimziGeneratedCrds:
    """Strimzi's CRDs, generated from `io.strimzi:api` as resolved by a pom in dev/tide_dev/maven/.

    That pom runs crd-generator 0.45.0 (0.48.0 is not on Maven Central; 1.x needs Java 21),
    which does not know @CelValidation: the generated CRDs lack the few CEL rules upstream
    puts on `metricsConfig` (valueFrom required for jmxPrometheusExporter, no
    strimziMetricsReporter for Cruise Control) and otherwise match packaging/install.
    """

    maven_project: str
    runs: tuple[StrimziCrdRun, ...]


CrdSource: TypeAlias = GoModuleCrds | StrimziGeneratedCrds

# The two executions (generate-crd-co-install-v1 and generate-crd-co-install-v1-eo) of
# https://github.com/strimzi/strimzi-kafka-operator/blob/0.48.0/api/pom.xml
STRIMZI_0_48_RUNS = (
    StrimziCrdRun(
        api_versions="v1beta2",
        storage_version="v1beta2",
        kinds=(
            ("kafka.Kafka", "040-Crd-kafka.yaml"),
            ("connect.KafkaConnect", "041-Crd-kafkaconnect.yaml"),
            ("podset.StrimziPodSet", "042-Crd-strimzipodset.yaml"),
            ("nodepool.KafkaNodePool", "045-Crd-kafkanodepool.yaml"),
            ("bridge.KafkaBridge", "046-Crd-kafkabridge.yaml"),
            ("connector.KafkaConnector", "047-Crd-kafkaconnector.yaml"),
            ("mirrormaker2.KafkaMirrorMaker2", "048-Crd-kafkamirrormaker2.yaml"),
            ("rebalance.KafkaRebalance", "049-Crd-kafkarebalance.yaml"),
        ),
    ),
    # The entity operator's kinds still serve the API versions they were born with.
    StrimziCrdRun(
        api_versions="v1alpha1,v1beta1,v1beta2",
        storage_version="v1beta2",
        kinds=(
            ("topic.KafkaTopic", "043-Crd-kafkatopic.yaml"),
            ("user.KafkaUser", "044-Crd-kafkauser.yaml"),
        ),
    ),
)

# Component (a field of infra.config.Versions) -> pinned version -> where its CRDs live.
# A pin missing here fails loudly, so bumping a version means saying where its CRDs are.
SOURCES: dict[str, dict[str, CrdSource]] = {
    "strimzi": {
        "0.48.0": StrimziGeneratedCrds(
            maven_project="strimzi-crd-generator", runs=STRIMZI_0_48_RUNS
        ),
    },
    # The KEDA chart is versioned with KEDA itself (kedacore/charts keda/Chart.yaml at
    # v2.17.2: version and appVersion 2.17.2).
    "keda": {
        "2.17.2": GoModuleCrds("github.com/kedacore/keda/v2", "v2.17.2", "config/crd/bases"),
    },
    # The pin is the chart's version; chart 0.26.0 ships operator 1.27.0 (appVersion in
    # cloudnative-pg/charts charts/cloudnative-pg/Chart.yaml at tag cloudnative-pg-v0.26.0).
    "cloudnative_pg": {
        "0.26.0": GoModuleCrds(
            "github.com/cloudnative-pg/cloudnative-pg", "v1.27.0", "config/crd/bases"
        ),
    },
    # Chart 77.6.2 ships prometheus-operator v0.85.0: appVersion v0.85.0 in
    # prometheus-community/helm-charts charts/kube-prometheus-stack/Chart.yaml at tag
    # kube-prometheus-stack-77.6.2, whose charts/crds/crds/*.yaml are annotated
    # operator.prometheus.io/version: 0.85.0 and name this directory as their origin.
    "kube_prometheus_stack": {
        "77.6.2": GoModuleCrds(
            "github.com/prometheus-operator/prometheus-operator",
            "v0.85.0",
            "example/prometheus-operator-crd",
        ),
    },
    # infra/components/rabbitmq.py applies this release's cluster-operator.yml, whose CRD
    # is built from the same directory.
    # The CRDs chart v1.18.2 installs with crds.enabled, from the same module directory.
    "cert_manager": {
        "v1.18.2": GoModuleCrds(
            "github.com/cert-manager/cert-manager", "v1.18.2", "deploy/crds", templated_labels=True
        ),
    },
    "rabbitmq_cluster_operator": {
        "2.16.0": GoModuleCrds(
            "github.com/rabbitmq/cluster-operator/v2", "v2.16.0", "config/crd/bases"
        ),
    },
}


def crd_sources(versions: Versions) -> dict[str, CrdSource]:
    """Where each pinned component's CRDs come from; a pin with no entry in SOURCES fails."""
    sources: dict[str, CrdSource] = {}
    for component, by_version in SOURCES.items():
        pin = str(getattr(versions, component))
        source = by_version.get(pin)
        if source is None:
            raise HarnessError(
                f"{component} {pin} CRDs",
                reason=(
                    f"Versions.{component} is pinned to {pin}, but tests/harness/crds.py "
                    f"knows CRD sources only for {', '.join(sorted(by_version))}"
                ),
                fix=(
                    f"add SOURCES[{component!r}][{pin!r}] to tests/harness/crds.py, "
                    f"naming where {component} {pin} keeps its CRDs"
                ),
            )
        sources[component] = source
    return sources


def crd_documents(versions: Versions) -> list[dict[str, Any]]:
    """Every upstream CRD the Pulumi program relies on, parsed; fetched once into the cache."""
    documents: list[dict[str, Any]] = []
    # Every pin is checked before anything is downloaded.
    for component, source in crd_sources(versions).items():
        directory = _cached(component, str(getattr(versions, component)), source)
        loaded = _load(directory)
        if isinstance(source, GoModuleCrds) and source.templated_labels:
            for document in loaded:
                document["metadata"].pop("labels", None)
        documents.extend(loaded)
    return documents


def _cached(component: str, pin: str, source: CrdSource) -> Path:
    root = cache_dir() / "crds"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{component}-{pin}"
    # The marker holds the source it was fetched from, so editing a table entry refetches.
    stamp = repr(source)
    if _complete(target, stamp):
        return target
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".partial", dir=root))
    try:
        what = f"{component} {pin} CRDs"
        log = root / f"{target.name}.log"
        if isinstance(source, GoModuleCrds):
            _copy_from_go_module(what, source, staging, log)
        else:
            _generate_strimzi(what, pin, source, staging, log)
        (staging / COMPLETE).write_text(stamp)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
        # A concurrent session (pytest-xdist) may have finished the same fetch first.
        if not _complete(target, stamp):
            shutil.rmtree(target, ignore_errors=True)
            try:
                staging.rename(target)
            except OSError:
                if not _complete(target, stamp):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(directory: Path, stamp: str) -> bool:
    marker = directory / COMPLETE
    return marker.is_file() and marker.read_text() == stamp


def go_module_dir(what: str, module: str, version: str, log: Path) -> Path:
    """A module's extracted source, downloaded once through the Go module proxy."""
    go = _go()
    command = [go, "mod", "download", "-json", f"{module}@{version}"]
    env = {
        **os.environ,
        # Kept beside the Maven repository, and writable so clearing the cache just works.
        "GOMODCACHE": str(cache_dir() / "go-mod"),
        # Only the download flag: a caller's -mod=vendor and the like would refuse it.
        "GOFLAGS": "-modcacherw",
        "GO111MODULE": "on",
        # A module's `toolchain` line must not start a toolchain download.
        "GOTOOLCHAIN": "local",
    }
    # Run outside any Go module, so no go.mod around the caller takes part.
    with tempfile.TemporaryDirectory() as outside:
        output = _run(what, command, shown=shlex.join(command), log=log, cwd=outside, env=env)
    return Path(str(json.loads(output)["Dir"]))


def pinned_module(component: str, version: str, what: str) -> GoModuleCrds:
    """The Go module the pinned chart's CRDs come from, which must be the one `what` is built at."""
    from infra.config import Versions  # noqa: PLC0415 - the program's pins, only when asked

    source = crd_sources(Versions())[component]
    if not isinstance(source, GoModuleCrds) or source.version != version:
        raise HarnessError(
            what,
            reason=f"built at {version}, but the pinned CRDs come from {source}",
            fix=f"set the version {what} is built at to the CRDs' module version, "
            "then: make control-plane",
        )
    return source


def module_manifests(
    source: GoModuleCrds, paths: tuple[str, ...], *, what: str, log: Path
) -> list[dict[str, Any]]:
    """The objects in `paths` of the module's source, as upstream ships them."""
    module = go_module_dir(what, source.module, source.version, log)
    documents: list[dict[str, Any]] = []
    for path in paths:
        with (module / path).open() as stream:
            documents.extend(
                d for d in yaml.load_all(stream, Loader=_SafeLoader) if isinstance(d, dict)
            )
    return documents


def _copy_from_go_module(what: str, source: GoModuleCrds, into: Path, log: Path) -> None:
    module_dir = go_module_dir(what, source.module, source.version, log)
    crd_dir = module_dir / source.directory
    copied = [
        shutil.copyfile(path, into / path.name)
        for path in sorted(crd_dir.glob("*.yaml"))
        if _crds_in(path)
    ]
    if not copied:
        raise HarnessError(
            what,
            reason=f"{source.module}@{source.version} has no CRD YAML in {source.directory}/",
            fix=f"correct the directory of its entry in SOURCES (look in {module_dir})",
        )


def _go() -> str:
    try:
        return require("go", search=["/usr/local/go/bin"])
    except HarnessError:
        raise HarnessError(
            "go",
            reason="not installed (the harness uses it only to download Go modules)",
            fix="sudo apt-get install -y golang-go, or put Go from https://go.dev/dl/ on PATH",
        ) from None


def _generate_strimzi(
    what: str, pin: str, source: StrimziGeneratedCrds, into: Path, log: Path
) -> None:
    pom = MAVEN_DIR / source.maven_project / "pom.xml"
    try:
        java = require("java")
        classpath = runtime_classpath(source.maven_project)
    except HarnessError as error:
        # Say which pin needed Java or Maven; the reason, log and fix stay as they were.
        raise HarnessError(
            what, reason=f"{error.what}: {error.reason}", fix=error.fix, log=error.log
        ) from error
    api_jar = f"/io/strimzi/api/{pin}/api-{pin}.jar"
    if not any(jar.endswith(api_jar) for jar in classpath.split(":")):
        raise HarnessError(
            what,
            reason=f"{pom} does not resolve io.strimzi:api:{pin}, the pinned Strimzi",
            fix=f"set strimzi.api.version to {pin} in {pom}",
        )
    for run in source.runs:
        arguments = [
            CRD_GENERATOR,
            "--label",
            "app:strimzi",
            "--label",
            "strimzi.io/crd-install:true",
            "--target-kube",
            "1.16+",
            "--crd-api-version",
            "v1",
            "--api-versions",
            run.api_versions,
            "--storage-version",
            run.storage_version,
            "--yaml",
            # The generator needs absolute paths: it creates each file's parent directory.
            *(
                f"io.strimzi.api.kafka.model.{cls}={into.resolve() / name}"
                for cls, name in run.kinds
            ),
        ]
        shown = shlex.join([java, "-cp", f"<runtime classpath of {pom}>", *arguments])
        _run(what, [java, "-cp", classpath, *arguments], shown=shown, log=log)
        missing = [name for _, name in run.kinds if not (into / name).is_file()]
        if missing:
            raise HarnessError(
                what,
                reason=f"{CRD_GENERATOR} wrote no {', '.join(missing)}",
                fix=f"run: {shown}",
                log=log,
            )


def _run(
    what: str,
    command: list[str],
    *,
    shown: str,
    log: Path,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a fetch step and return its stdout; its output goes to `log` for the error message."""
    fix = f"check that the version exists and its registry is reachable, then run: {shown}"
    try:
        result = subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(
            what, reason=f"`{shown}` did not finish in {TIMEOUT_SECONDS} s", fix=fix
        ) from None
    log.write_text(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        raise HarnessError(
            what, reason=f"`{shown}` exited with {result.returncode}", fix=fix, log=log
        )
    return result.stdout


def _crds_in(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as stream:
        return [
            document
            for document in yaml.load_all(stream, Loader=CrdLoader)
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition"
        ]


def _load(directory: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        documents.extend(_crds_in(path))
    return documents
