"""The shop's own Pulumi program: Tide's platform for the shop's catalog and image.

A team's program is this small: it reads the stack's `tide:*` settings, loads its catalog
and names its image (Tide's runtime image with the `orders` package installed), and
exports what it needs from the component's outputs.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
from infra.config import Image, load
from infra.outputs import API_URL
from infra.platform import TidePlatform, TidePlatformArgs

from tide.catalog_file import load_catalog

CATALOG = Path(__file__).resolve().parents[1] / "catalog.yaml"

shop = TidePlatform(
    "shop",
    TidePlatformArgs(
        catalog=load_catalog(CATALOG),
        settings=load(),
        image=Image(repository="shop", tag="0.1.0", pull_policy="IfNotPresent"),
    ),
)
pulumi.export("ordersApi", shop.endpoints[API_URL])
pulumi.export("kafkaBootstrap", shop.kafka_bootstrap)
if shop.api_keys is not None:
    pulumi.export("apiKeys", shop.api_keys)  # the shop front's key: --show-secrets
