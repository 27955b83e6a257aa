"""The Grafana dashboard: what is committed is what scripts/gen_dashboard.py renders, every
query parses (promtool) and reads only the contract's metrics, and the panels an on-call
engineer needs are there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import gen_dashboard
from shared import metric_names as m
from tests.unit.test_alert_rules import promql_errors, unknown_labels, unknown_series

DASHBOARD = gen_dashboard.DASHBOARD_PATH
# Grafana's built-in variables, replaced by values a query could run with.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?:(\w+)\s*,\s*)?(\w+)\)$")

JSON = dict[str, Any]


@pytest.fixture(scope="module")
def dashboard() -> JSON:
    loaded: JSON = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: JSON) -> Iterator[JSON]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: JSON) -> Iterator[tuple[str, str]]:
    """(panel title, expr) for every query target."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def variables(dashboard: JSON) -> dict[str, JSON]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def substitute(expr: str, names: set[str]) -> str:
    """Replace Grafana variables as Grafana would before sending the query."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in names:
            return ".*"  # the "All" value of a multi-value variable, inside a =~ matcher
        raise AssertionError(f"query uses undefined variable ${name}: {expr}")

    return VARIABLE.sub(value, expr)


def panel_with(dashboard: JSON, *needles: str, without: str = "\0") -> JSON:
    """The first panel with a query holding every needle (and not `without`)."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if all(needle in expr for needle in needles) and without not in expr:
                return panel
    raise AssertionError(f"no panel has a query with all of {needles}")


def test_the_committed_dashboard_is_what_the_generator_renders() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == gen_dashboard.render(), (
        "deploy/grafana/dashboard.json is out of date: run python -m scripts.gen_dashboard"
    )


def test_the_data_source_is_a_variable_every_panel_uses(dashboard: JSON) -> None:
    source = variables(dashboard)["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panel_ids_are_unique_and_panels_fit_the_grid(dashboard: JSON) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_parses(dashboard: JSON, tmp_path: Path) -> None:
    names = set(variables(dashboard))
    exprs = {
        f"{title} #{i}": substitute(expr, names)
        for i, (title, expr) in enumerate(queries(dashboard))
    }
    assert exprs
    errors = promql_errors(exprs, tmp_path)
    assert errors is None, errors


def test_every_query_reads_only_the_contract_metrics(dashboard: JSON) -> None:
    for title, expr in queries(dashboard):
        assert not unknown_series(expr), f"{title}: {expr}"
        assert not unknown_labels(expr, {}), f"{title}: {expr}"


def test_variables_read_contract_metrics_and_labels(dashboard: JSON) -> None:
    for variable in variables(dashboard).values():
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"])
        assert match, variable["name"]
        metric, label = match.groups()
        assert metric in m.METRICS
        assert label in m.allowed_labels(metric)


def test_red_panels_per_route(dashboard: JSON) -> None:
    count = f"{m.HTTP_REQUEST_DURATION_SECONDS}_count"
    bucket = f"{m.HTTP_REQUEST_DURATION_SECONDS}_bucket"
    assert panel_with(dashboard, "rate(" + count, "route", without="/")
    assert panel_with(dashboard, count, 'status=~"5.."', "route", " / ")
    for q in ("0.5", "0.99"):
        assert panel_with(dashboard, f"histogram_quantile({q}", bucket, "route")


def test_votes_by_verdict_and_rejection_reasons(dashboard: JSON) -> None:
    assert panel_with(dashboard, m.VOTES_DECIDED_TOTAL, "by (verdict)")
    assert panel_with(dashboard, m.VOTES_DECIDED_TOTAL, "by (reason)", 'verdict="rejected"')


@pytest.mark.parametrize(
    ("histogram", "objective"),
    [
        (m.VOTE_DECISION_DELAY_SECONDS, m.DECISION_OBJECTIVE_SECONDS),
        (m.VOTE_COUNT_DELAY_SECONDS, m.COUNT_OBJECTIVE_SECONDS),
    ],
)
def test_delay_percentiles_with_the_objective_drawn(
    dashboard: JSON, histogram: str, objective: float
) -> None:
    panel = panel_with(dashboard, f"{histogram}_bucket[", "histogram_quantile(0.999")
    exprs = " ".join(t["expr"] for t in panel["targets"])
    for q in ("0.5", "0.99", "0.999"):
        assert f"histogram_quantile({q}," in exprs
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"
    assert objective in [step["value"] for step in defaults["thresholds"]["steps"]]


def test_consumer_lag_per_group_and_partition(dashboard: JSON) -> None:
    panel = panel_with(dashboard, m.KAFKA_CONSUMER_LAG_MESSAGES)
    expr = panel["targets"][0]["expr"]
    assert "group" in expr
    assert "partition" in expr


@pytest.mark.parametrize(
    "metric",
    [m.LOTTERY_ENTRIES, m.SSE_CLIENTS, "process_resident_memory_bytes", m.VOTES_SUBMITTED_TOTAL],
)
def test_panels_for_lottery_live_results_and_processes(dashboard: JSON, metric: str) -> None:
    assert panel_with(dashboard, metric)


def test_the_checks_catch_a_bad_query(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="undefined variable"):
        substitute('sum(rate(votes_submitted_total{poll=~"$pol"}[$__rate_interval]))', {"poll"})
    broken = substitute("sum by (poll) (rate(votes_submitted_total[$__rate_interval])", set())
    assert promql_errors({"broken": broken}, tmp_path)
    assert unknown_series("sum(lottery_entry{poll=~'.*'})") == {"lottery_entry"}
