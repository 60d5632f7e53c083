"""The reference OTT platform's catalog, read from catalog.yaml beside this module.

Adding a consumer is one `consumer_groups` entry there plus one handler function.
The Pulumi program, the local runner and the tests all read `CATALOG`.
"""

from __future__ import annotations

from pathlib import Path

from tide.catalog_file import load_catalog

REFERENCE_CATALOG = Path(__file__).with_name("catalog.yaml")
CATALOG = load_catalog(REFERENCE_CATALOG)
