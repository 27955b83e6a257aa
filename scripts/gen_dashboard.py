"""Generate the Grafana dashboard of the voting platform: deploy/grafana/dashboard.json.

    python -m scripts.gen_dashboard           # rewrite the file
    python -m scripts.gen_dashboard --check   # exit 1 if the file is out of date

The dashboard is code so every panel gets the same data source variable, units and
layout, and so a test can hold the committed JSON to what this module renders.
Queries use only the metric names of shared/metric_names.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import metric_names as m

JSON = dict[str, Any]

DASHBOARD_PATH = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboard.json"
UID = "votes-overview"
DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}
SERVICES_RE = "|".join(sorted(m.SERVICES))
POLL = 'poll=~"$poll"'
REJECTED = POLL + ',verdict="rejected"'
SERVICE = 'service=~"$service"'
SERVICE_5XX = SERVICE + ',status=~"5.."'
JOB = 'job=~"$service"'
# A regex-escaped dot inside a PromQL string literal: the two characters \ and a dot.
PROMQL_ESCAPED_DOT = "\\\\."
RATE = "[$__rate_interval]"
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    stack: bool = False
    # A red line at this value: the objective a latency panel is judged against.
    objective: float | None = None
    extra_options: JSON = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def _rate(series: str, matchers: str = "") -> str:
    selector = f"{series}{{{matchers}}}" if matchers else series
    return f"rate({selector}{RATE})"


def _quantile_queries(histogram: str, by: str = "") -> tuple[Query, ...]:
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by.replace(", ", "}} {{") + "}} " if by else ""
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by ({group}) ({_rate(f'{histogram}_bucket')}))",
            f"{prefix}{name}",
        )
        for name, q in QUANTILES
    )


def _burn_rate(error_ratio_1h: str) -> str:
    return f"({error_ratio_1h}) / 0.001"


def _delay_good_ratio(histogram: str, bound: float, window: str) -> str:
    le = _le_matcher(bound)
    return (
        f"sum(rate({histogram}_bucket{{{le}}}[{window}])) / sum(rate({histogram}_count[{window}]))"
    )


def _delay_error_ratio(histogram: str, bound: float, window: str) -> str:
    return f"1 - {_delay_good_ratio(histogram, bound, window)}"


def _le_matcher(bound: float) -> str:
    # The Python client writes le="1.0"; Prometheus 3 normalises it to le="1".
    short, written = f"{bound:g}", repr(float(bound))
    if short == written:
        return f'le="{short}"'
    return f'le=~"{short}|{written.replace(".", PROMQL_ESCAPED_DOT)}"'


INGEST_VOTES = 'service="vote_ingest",route="/api/v1/polls/{poll}/votes",method="POST"'


def _ingest_error_ratio(window: str) -> str:
    count = m.HTTP_REQUEST_DURATION_SECONDS + "_count"
    return (
        f'(sum(rate({count}{{{INGEST_VOTES},status=~"5.."}}[{window}])) or vector(0))'
        f" / sum(rate({count}{{{INGEST_VOTES}}}[{window}]))"
    )


def _rows() -> tuple[Row, ...]:
    http = m.HTTP_REQUEST_DURATION_SECONDS
    decided = m.VOTES_DECIDED_TOTAL
    route_by = "service, method, route"
    return (
        Row(
            "Votes",
            (
                Panel(
                    "Votes /s by verdict",
                    "Votes answered 202 by ingest, decided by antifraud (by verdict) and "
                    "counted by tally. Submitted minus decided, kept up, is consumer lag.",
                    (
                        Query(f"sum({_rate(m.VOTES_SUBMITTED_TOTAL, POLL)})", "submitted"),
                        Query(f"sum by (verdict) ({_rate(decided, POLL)})", "{{verdict}}"),
                        Query(f"sum({_rate(m.VOTES_COUNTED_TOTAL, POLL)})", "counted"),
                        Query(
                            f"sum by (code) ({_rate(m.VOTES_SUBMIT_FAILED_TOTAL, POLL)})",
                            "failed: {{code}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Rejection reasons /s",
                    "Rejected votes by reason. One reason rising alone is a fraud wave "
                    "(RejectionReasonSurge) or a captcha problem (CaptchaFailureSpike).",
                    (
                        Query(
                            f"sum by (reason) ({_rate(decided, REJECTED)})",
                            "{{reason}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
                Panel(
                    "Counted votes /s by poll and choice",
                    "What the live results move by.",
                    (
                        Query(
                            f"sum by (poll, choice) ({_rate(m.VOTES_COUNTED_TOTAL, POLL)})",
                            "{{poll}} {{choice}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
                Panel(
                    "Captchas /s",
                    "Captchas handed out (images) and answers spoken (for voters who cannot"
                    " read them); compare with votes submitted.",
                    (
                        Query(f"sum({_rate(m.CAPTCHAS_ISSUED_TOTAL)})", "issued"),
                        Query(f"sum({_rate(m.CAPTCHAS_SPOKEN_TOTAL)})", "spoken"),
                    ),
                    unit="reqps",
                    width=12,
                    height=6,
                ),
                Panel(
                    "Services and dependencies",
                    "1 = up. A service's scrape (up) and its own view of Kafka and PostgreSQL.",
                    (
                        Query(f'min by (job) (up{{job=~"{SERVICES_RE}"}})', "{{job}}"),
                        Query(
                            f"min by (service, dependency) ({m.DEPENDENCY_UP})",
                            "{{service}} → {{dependency}}",
                        ),
                    ),
                    kind="stat",
                    width=12,
                    height=6,
                    extra_options={"mappings": _up_mappings()},
                ),
            ),
        ),
        Row(
            "Objectives",
            (
                Panel(
                    "Decision delay (received → decided)",
                    "Time from received_at to antifraud's decision. Objective: 99.9% "
                    "within 1 s (red line).",
                    _quantile_queries(m.VOTE_DECISION_DELAY_SECONDS),
                    unit="s",
                    objective=m.DECISION_OBJECTIVE_SECONDS,
                ),
                Panel(
                    "Count delay (received → counted)",
                    "Time from received_at to tally's count. Objective: 99.9% within 2 s "
                    "(red line).",
                    _quantile_queries(m.VOTE_COUNT_DELAY_SECONDS),
                    unit="s",
                    objective=m.COUNT_OBJECTIVE_SECONDS,
                ),
                Panel(
                    "Error budget burn rate (1 h)",
                    "How fast each objective spends its budget: 1 spends it exactly in "
                    "28 days; 14.4 over an hour pages.",
                    (
                        Query(
                            _burn_rate(
                                _delay_error_ratio(
                                    m.VOTE_DECISION_DELAY_SECONDS,
                                    m.DECISION_OBJECTIVE_SECONDS,
                                    "1h",
                                )
                            ),
                            "decision delay",
                        ),
                        Query(
                            _burn_rate(
                                _delay_error_ratio(
                                    m.VOTE_COUNT_DELAY_SECONDS, m.COUNT_OBJECTIVE_SECONDS, "1h"
                                )
                            ),
                            "count delay",
                        ),
                        Query(_burn_rate(_ingest_error_ratio("1h")), "ingest availability"),
                    ),
                    objective=14.4,
                ),
                Panel(
                    "SLIs over the dashboard range",
                    "Share of votes decided within 1 s, counted within 2 s, and vote "
                    "POSTs not answered 5xx. Objective: 99.9% each.",
                    (
                        Query(
                            _delay_good_ratio(
                                m.VOTE_DECISION_DELAY_SECONDS,
                                m.DECISION_OBJECTIVE_SECONDS,
                                "$__range",
                            ),
                            "decided within 1 s",
                        ),
                        Query(
                            _delay_good_ratio(
                                m.VOTE_COUNT_DELAY_SECONDS, m.COUNT_OBJECTIVE_SECONDS, "$__range"
                            ),
                            "counted within 2 s",
                        ),
                        Query("1 - (" + _ingest_error_ratio("$__range") + ")", "ingest available"),
                    ),
                    kind="stat",
                    unit="percentunit",
                    width=24,
                    height=5,
                    extra_options={"decimals": 3, "thresholds": _thresholds(0.999, "red", "green")},
                ),
            ),
        ),
        Row(
            "Kafka consumers",
            (
                Panel(
                    "Consumer lag by group and partition",
                    "Messages each consumer group has yet to process. Rising for minutes "
                    "means the group cannot keep up (KafkaConsumerLagHighAndGrowing).",
                    (
                        Query(
                            f"sum by (group, topic, partition) ({m.KAFKA_CONSUMER_LAG_MESSAGES})",
                            "{{group}} {{topic}}/{{partition}}",
                        ),
                    ),
                    width=16,
                ),
                Panel(
                    "Dead-lettered /s",
                    "Records a consumer could not process and parked on votes.deadletter.",
                    (
                        Query(
                            f"sum by (group, topic) ({_rate(m.VOTES_DEADLETTERED_TOTAL)})",
                            "{{group}} {{topic}}",
                        ),
                    ),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "HTTP (RED by route)",
            (
                Panel(
                    "Requests /s by route",
                    "Rate of requests per service, method and route template.",
                    (
                        Query(
                            f"sum by ({route_by}) ({_rate(http + '_count', SERVICE)})",
                            "{{service}} {{method}} {{route}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "5xx ratio by route",
                    "Share of requests answered 5xx (errors of the RED method).",
                    (
                        Query(
                            f"sum by ({route_by}) ({_rate(http + '_count', SERVICE_5XX)})"
                            f" / sum by ({route_by}) ({_rate(http + '_count', SERVICE)})",
                            "{{service}} {{method}} {{route}}",
                        ),
                    ),
                    unit="percentunit",
                ),
                Panel(
                    "Responses /s by status",
                    "Answers by status code: 429 and 403 are the rules at work, 503 is "
                    "Kafka not confirming a vote.",
                    (
                        Query(
                            f"sum by (service, status) ({_rate(http + '_count', SERVICE)})",
                            "{{service}} {{status}}",
                        ),
                    ),
                    unit="reqps",
                    stack=True,
                ),
                Panel(
                    "Duration p50 by route",
                    "Median request duration per route.",
                    (_route_quantile(0.5),),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Duration p99 by route",
                    "99th percentile request duration per route.",
                    (_route_quantile(0.99),),
                    unit="s",
                    width=12,
                ),
            ),
        ),
        Row(
            "Lottery and live results",
            (
                Panel(
                    "Lottery entries by poll",
                    "Registered lottery entries (one per phone number and poll).",
                    (Query(f"max by (poll) ({m.LOTTERY_ENTRIES}{{{POLL}}})", "{{poll}}"),),
                ),
                Panel(
                    "Live-result SSE clients by poll",
                    "Browsers holding a results stream open, over all tally replicas.",
                    (Query(f"sum by (poll) ({m.SSE_CLIENTS}{{{POLL}}})", "{{poll}}"),),
                ),
                Panel(
                    "Draws by poll",
                    "Draws performed (a draw is performed once per poll).",
                    (Query(f"max by (poll) ({m.LOTTERY_DRAWS_TOTAL}{{{POLL}}})", "{{poll}}"),),
                    kind="stat",
                ),
                Panel(
                    "Votes holding back a draw",
                    "For each poll awaiting its draw: votes received before the close still to "
                    "be decided or recorded. Zero: the draw can go ahead (alert DrawHeldBack).",
                    (Query(f"max by (poll) ({m.LOTTERY_DRAW_VOTES_LEFT}{{{POLL}}})", "{{poll}}"),),
                ),
            ),
        ),
        Row(
            "Processes",
            (
                Panel(
                    "Resident memory by service",
                    "process_resident_memory_bytes of every service process.",
                    (
                        Query(
                            f"sum by (job, instance) (process_resident_memory_bytes{{{JOB}}})",
                            "{{job}} {{instance}}",
                        ),
                    ),
                    unit="bytes",
                ),
                Panel(
                    "CPU by service",
                    "CPU seconds per second (cores) of every service process.",
                    (
                        Query(
                            f"sum by (job, instance) ({_rate('process_cpu_seconds_total', JOB)})",
                            "{{job}} {{instance}}",
                        ),
                    ),
                ),
                Panel(
                    "Versions",
                    "build_info: the version each service runs.",
                    (
                        Query(
                            f"count by (service, version) ({m.BUILD_INFO})",
                            "{{service}} {{version}}",
                        ),
                    ),
                    kind="stat",
                ),
            ),
        ),
    )


def _route_quantile(q: float) -> Query:
    http = m.HTTP_REQUEST_DURATION_SECONDS
    return Query(
        f"histogram_quantile({q}, sum by (service, method, route, le) "
        f"({_rate(http + '_bucket', SERVICE)}))",
        "{{service}} {{method}} {{route}}",
    )


def _up_mappings() -> list[JSON]:
    return [
        {
            "type": "value",
            "options": {
                "0": {"text": "DOWN", "color": "red", "index": 0},
                "1": {"text": "UP", "color": "green", "index": 1},
            },
        }
    ]


def _thresholds(value: float, below: str, above: str) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": below, "value": None}, {"color": above, "value": value}],
    }


def _target(query: Query, ref: str) -> JSON:
    return {
        "datasource": DATASOURCE,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": True,
        "refId": ref,
    }


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    thresholds = (
        _thresholds(panel.objective, "green", "red")
        if panel.objective is not None
        else {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
    )
    custom: JSON = {}
    if panel.kind == "timeseries":
        custom = {
            "drawStyle": "line",
            "fillOpacity": 10 if panel.stack else 0,
            "lineWidth": 1,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if panel.objective is not None else "off"},
        }
    options: JSON = {}
    if panel.kind == "timeseries":
        options = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        options = {
            "colorMode": "value",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        }
    defaults: JSON = {"unit": panel.unit, "thresholds": thresholds, "custom": custom}
    extra = dict(panel.extra_options)
    if "thresholds" in extra:
        defaults["thresholds"] = extra.pop("thresholds")
    if "mappings" in extra:
        defaults["mappings"] = extra.pop("mappings")
    defaults.update(extra)
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
    }


def _layout(rows: Iterable[Row]) -> list[JSON]:
    panels: list[JSON] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _query_variable(name: str, label: str, metric: str) -> JSON:
    query = f"label_values({metric}, {label})"
    return {
        "name": name,
        "label": name.capitalize(),
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def _templating() -> JSON:
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            _query_variable("poll", "poll", m.VOTES_SUBMITTED_TOTAL),
            _query_variable("service", "service", m.BUILD_INFO),
        ]
    }


def build() -> JSON:
    """The dashboard as a JSON-ready dict."""
    return {
        "uid": UID,
        "title": "Votes: overview",
        "description": "Votes flowing, consumer lag, rejection reasons and the delay "
        "objectives of the voting platform. Alerts and runbook: docs/runbook.md.",
        "tags": ["votes"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": _templating(),
        "panels": _layout(_rows()),
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.read_text(encoding="utf-8") if DASHBOARD_PATH.exists() else ""
        if current != text:
            print(f"{DASHBOARD_PATH} is out of date: run python -m scripts.gen_dashboard")
            return 1
        return 0
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
