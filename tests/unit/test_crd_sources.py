"""The upstream CRDs the deploy tests install follow the pins, and are fetched only once."""

from __future__ import annotations

from pathlib import Path

import pytest
from infra.config import Versions

from tests.harness import crds
from tide_dev.errors import HarnessError

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            op: {type: string, enum: [=, "!=", =~]}
"""


def test_every_default_pin_has_a_crd_source() -> None:
    assert set(crds.crd_sources(Versions())) == set(crds.SOURCES)


def test_a_pin_without_a_crd_source_fails_before_any_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDE_CACHE_DIR", str(tmp_path))
    with pytest.raises(HarnessError) as caught:
        crds.crd_documents(Versions(strimzi="0.99.0"))
    assert "Versions.strimzi is pinned to 0.99.0" in str(caught.value)
    assert "SOURCES['strimzi']['0.99.0']" in str(caught.value)
    assert not (tmp_path / "crds").exists()


def test_crds_are_fetched_once_and_a_half_finished_fetch_is_redone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIDE_CACHE_DIR", str(tmp_path))
    source = crds.GoModuleCrds("example.com/widgets", "v1.0.0", "crds")
    monkeypatch.setattr(crds, "SOURCES", {"keda": {Versions().keda: source}})
    fetches: list[Path] = []

    def fake_download(what: str, source: crds.GoModuleCrds, into: Path, log: Path) -> None:
        fetches.append(into)
        (into / "widgets.yaml").write_text(CRD)

    monkeypatch.setattr(crds, "_copy_from_go_module", fake_download)

    first = crds.crd_documents(Versions())
    again = crds.crd_documents(Versions())
    assert len(fetches) == 1
    assert first == again
    assert [document["metadata"]["name"] for document in first] == ["widgets.example.com"]
    # A bare `=` is the string Kubernetes reads, not YAML 1.1's `value` tag.
    schema = first[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["op"]["enum"] == ["=", "!=", "=~"]

    (tmp_path / "crds" / f"keda-{Versions().keda}" / crds.COMPLETE).unlink()
    assert crds.crd_documents(Versions()) == first
    assert len(fetches) == 2
