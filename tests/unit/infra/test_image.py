"""A code change is a new image on kind; an unchanged tree is the same image."""

from __future__ import annotations

import shutil
from pathlib import Path

from infra.image import BUILD_CONTEXT, ROOT, source_digest

from tests.unit.infra.chart import by_kind, render
from tests.unit.infra.program import Program


def _copy_context(target: Path) -> Path:
    for entry in BUILD_CONTEXT:
        source = ROOT / entry
        if source.is_file():
            shutil.copy(source, target / entry)
        else:
            shutil.copytree(source, target / entry, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_the_digest_follows_the_code_and_only_the_code(tmp_path: Path) -> None:
    tree = _copy_context(tmp_path)
    before = source_digest(tree)
    assert source_digest(tree) == before
    (tree / "services" / "tide" / "__pycache__").mkdir(exist_ok=True)
    (tree / "services" / "tide" / "__pycache__" / "x.pyc").write_bytes(b"noise")
    assert source_digest(tree) == before
    handler = tree / "services" / "tide" / "handlers.py"
    handler.write_text(handler.read_text() + "\n# a change\n")
    assert source_digest(tree) != before


def test_kind_pods_and_jobs_run_the_image_make_up_builds(kind: Program) -> None:
    expected = f"tide:{source_digest()}"
    for chart in kind.of_type("helm.sh/v4:Chart"):
        values = chart.inputs.get("values", {})
        if "args" not in values:
            continue
        (deployment,) = by_kind(render(values), "Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == expected
    for job in kind.of_type("batch/v1:Job"):
        assert job.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == expected
