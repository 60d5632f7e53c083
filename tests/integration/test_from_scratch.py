"""The README's "From an empty directory", as a newcomer follows it, on the real brokers.

The files are taken from the README itself, so the section cannot drift from what works:
written into an empty directory, the catalog checked with `tide catalog check`, then
`make local CATALOG=...` (python -m tide_dev.local --catalog) runs them. A greeting posted
with the credentials `make local` prints is delivered by the team's consumer group, one
its handler refuses lands in the group's own DLQ, and Prometheus holds the alerts Tide
derived for the group. The one step done otherwise: the package goes on PYTHONPATH
rather than `pip install -e` into the shared venv.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import unique
from tests.integration.local_run import ROOT, make_local
from tide.catalog_file import load_catalog
from tide.dlq import DeadLetterQueue
from tide.store.processed import count_processed
from tide.waiting import wait_until
from tide_dev import Brokers

SECTION = "#### From an empty directory"
# A file of the section: its path in backquotes opening a paragraph, then its block.
FILE = re.compile(r"^`([\w./-]+)`, [^\n]*(?:\n[^\n]+)*\n\n```\w+\n(.*?)\n```", re.M | re.S)
LIVE = re.compile(r"API (http://\S+) \(its credentials: curl -H @(\S+)\), Prometheus (http://\S+),")
pytestmark = pytest.mark.timeout(600)


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n#### ", start + len(SECTION))]


def test_the_readmes_platform_from_an_empty_directory_runs_on_make_local(
    brokers: Brokers, tmp_path: Path
) -> None:
    section = _section()
    files = dict(FILE.findall(section))
    assert set(files) == {
        "catalog.yaml",
        "pyproject.toml",
        "greetings/schemas/greeting.sent.v1.json",
        "greetings/api.py",
        "greetings/mailroom.py",
    }, set(files)
    assert "touch greetings/__init__.py greetings/schemas/__init__.py" in section
    assert "make local CATALOG=../greetings/catalog.yaml" in section
    project = tmp_path / "greetings"
    for path, text in {**files, "greetings/__init__.py": "", "greetings/schemas/__init__.py": ""
                       }.items():  # fmt: skip
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text + "\n" if text else "")
    suffix = unique("scratch")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIDE_")},
        **brokers.as_env(),
        # The session's brokers, shared with the other tests: names of its own.
        "TIDE_CATALOG_SUFFIX": suffix,
        "PYTHONPATH": os.pathsep.join([str(project), *filter(None, [os.getenv("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    checked = subprocess.run(
        [sys.executable, "-m", "tide", "catalog", "check", "catalog.yaml"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    catalog = load_catalog(project / "catalog.yaml").isolated(suffix)
    (group,) = catalog.consumer_groups

    # `cd ../tide && make local CATALOG=../greetings/catalog.yaml`, the path made whole.
    with make_local("--catalog", str(project / "catalog.yaml"), "--interval", "1s",
                    env=env) as local:  # fmt: skip
        live = LIVE.search(local.wait_live())
        assert live is not None, local.output[-3000:]
        api, credentials, prometheus = live.groups()
        name, value = Path(credentials).read_text().strip().split(": ", 1)
        headers = {name: value}
        for to in ("ada", "nobody"):
            answer = httpx.post(f"{api}/greetings", json={"to": to, "text": "hello"},
                                headers=headers, timeout=30)  # fmt: skip
            assert answer.status_code == 202, answer.text
        stranger = httpx.post(f"{api}/greetings", json={"to": "ada", "text": "hi"}, timeout=30)
        assert stranger.status_code == 401, stranger.text
        # Past the model, the schema: the publisher's codec refuses it, named, never a 500.
        blank = httpx.post(f"{api}/greetings", json={"to": "", "text": "hello"}, headers=headers,
                           timeout=30)  # fmt: skip
        assert blank.status_code == 422, blank.text
        assert blank.json()["error"] == "invalid event", blank.text
        assert "'to'" in blank.json()["detail"], blank.text

        dsn = brokers.postgres_dsn

        def delivered() -> int:
            with psycopg.connect(dsn) as conn:
                return count_processed(conn, group.name)

        wait_until(lambda: delivered() >= 1, timeout=60, what="ada's greeting delivered")
        dlq = DeadLetterQueue({"bootstrap.servers": brokers.kafka_bootstrap}, group)
        wait_until(lambda: dlq.depth() == 1, timeout=60, what=f"{group.dlq_topic}")
        (dead,) = dlq.show()
        assert (dead.key, dead.reason) == (b"nobody", "permanent"), dead
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
        alerts = {
            rule["name"]
            for rule_group in rules
            for rule in rule_group["rules"]
            if rule.get("labels", {}).get("consumergroup") == group.name
        }
        assert alerts == {
            "TideConsumerGroupLagHigh",
            "TideDeadLettersGrowing",
            "TideConsumerGroupNoMembers",
        }, alerts
        code = local.interrupt()
    assert code == 0, local.output[-3000:]
    assert delivered() == 1  # once, though the poison one shared its partition's batch
