"""`make local`'s live view: the platform as Prometheus sees it, refreshed every 2 s.

Per consumer group: members, lag, processed per second, retry backlog, DLQ depth and
dead letters ever. The API: answers per second, the share accepted, p99. Then every
pending or firing alert. Members, lag, processed, dead letters and the API figures are
dashboard panels' own expressions (infra.dashboards), so they show what Grafana shows on
the cluster; the DLQ depth (records not yet redriven) is `tide status`'s, read from Kafka.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
from infra.dashboards import (
    any_of,
    api_p99,
    api_requests,
    dead_letters,
    group_lag,
    group_members,
    group_processed,
    lag,
)
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from tide.dlq import DeadLetterQueue

if TYPE_CHECKING:
    from tide_dev.local import LocalStack

REFRESH_S = 2.0


def _by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {row["metric"].get(label, ""): float(row["value"][1]) for row in result}


def _table(title: str, *columns: Column | str) -> Table:
    """A borderless table under a left-aligned title, narrow enough for 80 columns."""
    return Table(
        *columns,
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        show_edge=False,
    )


def _number(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)  # NaN: no data yet


class LiveView:
    def __init__(self, stack: LocalStack, console: Console) -> None:
        self.stack = stack
        self.console = console

    def queries(self) -> dict[str, str]:
        catalog = self.stack.catalog
        groups = any_of(g.name for g in catalog.consumer_groups)
        retry = any_of(t for g in catalog.consumer_groups for t in g.retry_topics)
        retrying = f'consumergroup=~"{groups}",topic=~"{retry}"'
        api = self.stack.api_service
        return {
            "members": group_members(catalog),
            "lag": group_lag(catalog),
            "processed": group_processed(catalog),
            # Not a dashboard panel: on the cluster the lag panel counts retries in.
            "retry": f"sum by (consumergroup) ({lag(retrying)})",
            "dead": dead_letters(catalog),
            "api_rate": api_requests(api),
            "api_p99": api_p99(api),
            "up": 'sum by (service) (up{job="tide-services"})',
        }

    def snapshot(self) -> dict[str, Any]:
        prometheus = self.stack.prometheus
        assert prometheus is not None
        q = {name: prometheus.query(expr) for name, expr in self.queries().items()}
        return {
            "members": _by(q["members"], "consumergroup"),
            "lag": _by(q["lag"], "consumergroup"),
            "processed": _by(q["processed"], "group"),
            "retry": _by(q["retry"], "consumergroup"),
            "dead": _by(q["dead"], "topic"),
            "depth": self._dlq_depths(),
            "api_rate": _by(q["api_rate"], "status"),
            "api_p99": next(iter(_by(q["api_p99"], "").values()), None),
            "up": _by(q["up"], "service"),
            "alerts": prometheus.alerts(),
        }

    def _dlq_depths(self) -> dict[str, int | None]:
        client = self.stack.settings.kafka_client_config()
        depths: dict[str, int | None] = {}
        for group in self.stack.catalog.consumer_groups:
            try:
                depths[group.name] = DeadLetterQueue(client, group, timeout_s=2).depth()
            except Exception:  # noqa: BLE001 - one unreadable DLQ shows "-", not a crash
                depths[group.name] = None
        return depths

    def render(self, snap: dict[str, Any], *, uptime_s: float, started_in: float) -> Group:
        stack = self.stack
        catalog = stack.catalog
        assert stack.prometheus is not None
        head = Text.assemble(
            ("Tide local", "bold"),
            f"  live {started_in:.0f} s after the command, for {uptime_s:,.0f} s now",
            f"  API {stack.api_url}  Prometheus {stack.prometheus.url}",
            f"  load {stack.rate:g} watches/s" if stack.load is not None else "  no workload",
        )
        # Narrow enough for an 80-column terminal: rate = records processed per second,
        # retrying = retry backlog, in DLQ = DLQ depth, dead-lettered = ever.
        groups = _table(
            "Kafka consumer groups",
            Column("group", no_wrap=True),
            "members",
            "lag",
            "rate/s",
            "retrying",
            "in DLQ",
            "dead-lettered",
        )
        for group in catalog.consumer_groups:
            groups.add_row(
                group.name,
                _number(snap["members"].get(group.name)),
                _number(snap["lag"].get(group.name)),
                _number(snap["processed"].get(group.name), "{:,.1f}"),
                _number(snap["retry"].get(group.name, 0.0)),
                _number(snap["depth"].get(group.name)),
                _number(snap["dead"].get(group.dlq_topic)),
            )
        rates = snap["api_rate"]
        total = sum(rates.values())
        accepted = rates.get("202", 0.0)
        p99 = snap["api_p99"]
        api = Text(
            f"API {stack.api_service}: {total:,.1f} answers/s, "
            f"{(accepted / total * 100) if total else 0:.1f}% accepted (202), "
            f"p99 {_number(None if p99 is None else p99 * 1000, '{:,.1f}')} ms"
        )
        up = snap["up"]
        wanted: dict[str, int] = {}
        for child in stack._supervisor.children:
            wanted[child.service] = wanted.get(child.service, 0) + 1
        services = Text(
            "services up: "
            + ", ".join(f"{name} {_number(up.get(name))}/{n}" for name, n in wanted.items())
        )
        alerts = _table("Alerts (pending and firing)", "alert", "labels", "state", "since")
        for alert in sorted(snap["alerts"], key=lambda a: (a["state"], a["labels"]["alertname"])):
            labels = {
                k: v for k, v in alert["labels"].items() if k not in ("alertname", "severity")
            }
            alerts.add_row(
                alert["labels"]["alertname"],
                ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                alert["state"],
                alert.get("activeAt", "")[11:19],
            )
        if not snap["alerts"]:
            alerts.add_row("none", "", "", "")
        return Group(head, groups, api, services, alerts)

    def run(self, *, duration: float, started_in: float) -> None:
        """Until Ctrl-C, or for `duration` seconds when it is not 0."""
        began = time.monotonic()
        tick = threading.Event()  # never set: its wait paces the refresh
        shown: list[Group] = []

        def frame() -> Group:
            try:
                snap = self.snapshot()
            except (httpx.HTTPError, RuntimeError) as exc:
                # Prometheus busy or restarting: keep the last frame, say why it is old.
                note = Text(f"(not refreshed: Prometheus did not answer: {exc})", style="yellow")
                return Group(*shown[-1:], note)
            shown[:] = [self.render(snap, uptime_s=time.monotonic() - began, started_in=started_in)]
            return shown[0]

        try:
            first = frame()
        except KeyboardInterrupt:
            self.console.print(frame())  # Ctrl-C before the first frame: show the state once
            return
        with Live(first, console=self.console, refresh_per_second=1) as live:
            try:
                while not tick.wait(REFRESH_S):
                    live.update(frame())
                    if duration and time.monotonic() - began >= duration:
                        break
            except KeyboardInterrupt:
                pass
