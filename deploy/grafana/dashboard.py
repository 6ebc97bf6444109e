"""The virtbus Grafana dashboard, as code (grafanalib).

``python deploy/grafana/dashboard.py > deploy/grafana/virtbus.json`` writes the
JSON Grafana imports; ``tests/deploy/test_grafana.py`` checks the committed
JSON is this module's output and that every panel's PromQL parses
(``promtool``).  The queries read the series and recording rules of
``deploy/prometheus`` (labels ``service``, ``host``, ``job=~"virtbus.*"``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    BYTES_FORMAT,
    OPS_FORMAT,
    PERCENT_UNIT_FORMAT,
    SECONDS_FORMAT,
    Dashboard,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    TimeSeries,
)

DATASOURCE = "${datasource}"
HOST = 'host=~"$host"'
SERVICE = 'service=~"$service"'

#: (row title, [(panel title, unit, [(PromQL, legend)])]) in display order.
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    (
        "Services",
        [
            (
                "Targets up",
                "none",
                [(f'sum by (service) (up{{job=~"virtbus.*", {HOST}}})', "{{service}}")],
            ),
            (
                "Requests per second",
                OPS_FORMAT,
                [
                    (
                        f"sum by (service, outcome) (virtbus:requests:rate5m{{{SERVICE}}})",
                        "{{service}} {{outcome}}",
                    ),
                ],
            ),
            (
                "Error ratio",
                PERCENT_UNIT_FORMAT,
                [
                    (f"virtbus:request_errors:ratio_rate5m{{{SERVICE}}}", "{{service}}"),
                ],
            ),
            (
                "p99 request time",
                SECONDS_FORMAT,
                [
                    (f"virtbus:request_duration_seconds:p99_5m{{{SERVICE}}}", "{{service}}"),
                ],
            ),
            (
                "Slowest endpoints (p99)",
                SECONDS_FORMAT,
                [
                    (
                        "topk(10, histogram_quantile(0.99, sum by (service, endpoint, le) "
                        '(rate({__name__=~"virtbus_.+_request_duration_seconds_bucket", '
                        f"{SERVICE}}}[5m]))))",
                        "{{service}} {{endpoint}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Events and JetStream",
        [
            (
                "Events stored",
                OPS_FORMAT,
                [
                    (
                        'max(rate(virtbus_jetstream_stream_last_sequence{stream="VIRTBUS_EVENTS"}[5m]))',
                        "events/s",
                    ),
                ],
            ),
            (
                "Event publish failures",
                "none",
                [
                    (
                        "sum by (service) (increase("
                        '{__name__=~"virtbus_.+_event_publish_failures_total"}[1h]))',
                        "{{service}}",
                    ),
                ],
            ),
            (
                "Consumer lag",
                "none",
                [
                    ("virtbus:consumer_pending_messages:max", "{{stream}} {{consumer}}"),
                ],
            ),
            (
                "Stream size",
                BYTES_FORMAT,
                [
                    ("max by (stream) (virtbus_jetstream_stream_bytes)", "{{stream}}"),
                ],
            ),
            (
                "JetStream storage used",
                PERCENT_UNIT_FORMAT,
                [
                    ("virtbus:jetstream_storage_used:ratio", "used"),
                ],
            ),
        ],
    ),
    (
        "Storage",
        [
            (
                "Pool use",
                PERCENT_UNIT_FORMAT,
                [(f"virtbus:pool_used:ratio{{{HOST}}}", "{{host}} {{pool}}")],
            ),
            (
                "Pool free space",
                BYTES_FORMAT,
                [
                    (f"virtbus_storage_pool_available_bytes{{{HOST}}}", "{{host}} {{pool}}"),
                ],
            ),
            (
                "Block jobs ended",
                "none",
                [
                    (
                        "sum by (host, phase) "
                        f"(increase(virtbus_storage_blockjobs_ended_total{{{HOST}}}[1h]))",
                        "{{host}} {{phase}}",
                    ),
                ],
            ),
            (
                "External tool time (p99)",
                SECONDS_FORMAT,
                [
                    (
                        "histogram_quantile(0.99, sum by (tool, le) "
                        f"(rate(virtbus_storage_command_duration_seconds_bucket{{{HOST}}}[5m])))",
                        "{{tool}}",
                    ),
                ],
            ),
        ],
    ),
]


def _panel(title: str, unit: str, queries: list[tuple[str, str]], x: int, y: int) -> Any:
    targets = [
        Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i), datasource=DATASOURCE)
        for i, (expr, legend) in enumerate(queries)
    ]
    pos = GridPos(h=8, w=8, x=x, y=y)
    if title == "Targets up":
        return Stat(title=title, dataSource=DATASOURCE, targets=targets, gridPos=pos)
    return TimeSeries(title=title, dataSource=DATASOURCE, targets=targets, gridPos=pos, unit=unit)


def dashboard() -> Dashboard:
    panels: list[Any] = []
    y = 0
    for row, entries in ROWS:
        panels.append(RowPanel(title=row, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, (title, unit, queries) in enumerate(entries):
            panels.append(_panel(title, unit, queries, (i % 3) * 8, y + (i // 3) * 8))
        y += 8 * ((len(entries) + 2) // 3)
    variables = [
        Template(name="datasource", type="datasource", query="prometheus", default="Prometheus"),
        Template(
            name="host", dataSource=DATASOURCE, query='label_values(up{job=~"virtbus.*"}, host)',
            includeAll=True, multi=True, default="$__all",
        ),
        Template(
            name="service", dataSource=DATASOURCE,
            query='label_values(up{job=~"virtbus.*"}, service)',
            includeAll=True, multi=True, default="$__all",
        ),
    ]  # fmt: skip
    return Dashboard(
        title="virtbus",
        uid="virtbus",
        description="virtbus services, events, JetStream and storage (deploy/grafana/dashboard.py)",
        tags=["virtbus"],
        timezone="utc",
        panels=panels,
        templating=Templating(list=variables),
    ).auto_panel_ids()


def render() -> str:
    return (
        json.dumps(dashboard().to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True)
        + "\n"
    )


def queries() -> list[str]:
    """Every panel's PromQL, in display order."""
    return [expr for _, entries in ROWS for _, _, qs in entries for expr, _ in qs]


if __name__ == "__main__":
    sys.stdout.write(render())
