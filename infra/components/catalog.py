"""The platform's catalog as a ConfigMap that every Tide pod reads (TIDE_CATALOG_FILE).

The program and the pods read one catalog: the stack's (`tide:catalog`), validated by
the program and written here as the model it loaded, so a pod never meets a file the
program did not accept. The image needs only the packages the catalog names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from tide.topology import Catalog

CONFIG_MAP = "tide-catalog"
KEY = "catalog.yaml"
MOUNT_PATH = "/etc/tide/catalog"


def catalog_text(catalog: Catalog) -> str:
    """The catalog as the pods read it: the validated model, as YAML."""
    body = yaml.safe_dump(catalog.model_dump(mode="json"), sort_keys=False)
    return "# The stack's catalog as Tide's program validated it.\n" + body


@dataclass(frozen=True)
class CatalogMount:
    """The catalog's text as the pods read it, where they find it, and the digest that rolls
    them when it changes."""

    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def file(self) -> str:
        return f"{MOUNT_PATH}/{KEY}"

    def chart_values(self) -> dict[str, Any]:
        """`charts/tide-service`'s `catalog` values."""
        return {
            "configMap": CONFIG_MAP,
            "key": KEY,
            "mountPath": MOUNT_PATH,
            "checksum": self.checksum,
        }

    def volume(self) -> k8s.core.v1.VolumeArgs:
        return k8s.core.v1.VolumeArgs(
            name="catalog",
            config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=CONFIG_MAP, items=[k8s.core.v1.KeyToPathArgs(key=KEY, path=KEY)]
            ),
        )

    def volume_mount(self) -> k8s.core.v1.VolumeMountArgs:
        return k8s.core.v1.VolumeMountArgs(name="catalog", mount_path=MOUNT_PATH, read_only=True)


def catalog_mount(catalog: Catalog) -> CatalogMount:
    return CatalogMount(catalog_text(catalog))


def catalog_config_map(
    name: str, *, namespace: str, mount: CatalogMount, opts: pulumi.ResourceOptions
) -> k8s.core.v1.ConfigMap:
    return k8s.core.v1.ConfigMap(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=CONFIG_MAP,
            namespace=namespace,
            labels={"app.kubernetes.io/part-of": "tide"},
        ),
        data={KEY: mount.text},
        opts=opts,
    )
