"""The Prometheus rules: valid for promtool, unit-tested alert by alert, written against
the contract's metric names only, and each alert linked to its runbook section.

Needs promtool (Debian's `prometheus` package); without it these tests fail, by design.
"""

from __future__ import annotations

import re
import shutil
import string
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import metric_names as m

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yaml"
SCRAPE_TEMPLATE = ROOT / "deploy" / "prometheus" / "prometheus.yml.in"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_LINK = re.compile(r"^docs/runbook\.md#([a-z0-9_-]+)$")
SEVERITIES = frozenset({"page", "ticket"})
PROMTOOL_MISSING = (
    "promtool is not installed: install Debian's prometheus package "
    "(sudo apt-get install prometheus), which provides /usr/bin/promtool"
)


# ----------------------------------------------------------------------------- promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_MISSING)
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def promql_errors(exprs: Mapping[str, str], workdir: Path) -> str | None:
    """promtool's complaint about any of `exprs` (by name), or None if all parse."""
    names = list(exprs)
    rules = [{"record": f"check:expr_{i}", "expr": exprs[name]} for i, name in enumerate(names)]
    path = workdir / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    if result.returncode == 0:
        return None
    legend = "\n".join(f"  rule {i}: {name}" for i, name in enumerate(names))
    return f"{result.stdout}{result.stderr}\n{legend}"


# ------------------------------------------------------------------ names in PromQL text

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "start",
        "end",
    }
)


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def series_in(expr: str) -> frozenset[str]:
    """The series names an expression reads (functions, keywords and labels left out)."""
    text = _blank_strings(expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    return frozenset(n for n in _IDENTIFIER.findall(text) if n.lower() not in _KEYWORDS)


def matched_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(series, label) for every label matcher attached to a series name."""
    for series, matchers in _SELECTOR.findall(_blank_strings(expr)):
        for label in _MATCHER_LABEL.findall(matchers):
            yield series, label


def unknown_series(expr: str, extra: Iterable[str] = ()) -> frozenset[str]:
    return series_in(expr) - m.queryable_names() - frozenset(extra)


def unknown_labels(expr: str, extra: Mapping[str, frozenset[str]]) -> set[tuple[str, str]]:
    wrong = set()
    for series, label in matched_labels(expr):
        allowed = extra.get(series, m.allowed_labels(series))
        if label not in allowed:
            wrong.add((series, label))
    return wrong


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Rule:
    group: str
    raw: Mapping[str, Any]

    @property
    def expr(self) -> str:
        return str(self.raw["expr"])

    @property
    def alert(self) -> str | None:
        name = self.raw.get("alert")
        return None if name is None else str(name)

    @property
    def record(self) -> str | None:
        name = self.raw.get("record")
        return None if name is None else str(name)


def load_rules() -> list[Rule]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [Rule(g["name"], r) for g in document["groups"] for r in g["rules"]]


def alerts() -> list[Rule]:
    return [r for r in load_rules() if r.alert is not None]


def recorded_labels() -> dict[str, frozenset[str]]:
    """Recorded series and the labels they keep (those of their outer `by`)."""
    labels: dict[str, frozenset[str]] = {}
    for rule in load_rules():
        if rule.record is None:
            continue
        grouping = re.search(r"\bby\s*\(([^)]*)\)", rule.expr)
        kept = grouping.group(1).split(",") if grouping else []
        labels[rule.record] = frozenset(label.strip() for label in kept if label.strip())
    return labels


def github_anchors(markdown: str) -> set[str]:
    """Anchors a Markdown renderer makes for headings, plus explicit <a id/name=...>."""
    anchors = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def rule_test_cases() -> list[Mapping[str, Any]]:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    return [case for test in document["tests"] for case in test.get("alert_rule_test", [])]


# ------------------------------------------------------------------------------- tests


def test_promtool_checks_the_rules_file() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in rule_test_cases():
        (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r.alert for r in alerts()}
    assert names - fires == set(), "alerts never shown firing in alerts.test.yaml"
    assert names - silent == set(), "alerts never shown staying silent in alerts.test.yaml"
    assert (fires | silent) - names == set(), "tests of alerts that do not exist"


def test_every_alert_has_a_severity_and_the_annotations_on_call_needs() -> None:
    for rule in alerts():
        labels = rule.raw.get("labels", {})
        annotations = rule.raw.get("annotations", {})
        assert labels.get("severity") in SEVERITIES, rule.alert
        for key in ("summary", "description", "runbook_url"):
            assert str(annotations.get(key, "")).strip(), f"{rule.alert} lacks {key}"


def test_every_runbook_url_is_a_section_of_the_runbook() -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for rule in alerts():
        assert rule.alert is not None
        url = str(rule.raw["annotations"]["runbook_url"])
        link = RUNBOOK_LINK.match(url)
        assert link, f"{rule.alert}: runbook_url {url!r} is not docs/runbook.md#<anchor>"
        anchor = link.group(1)
        assert anchor in anchors, f"{rule.alert}: docs/runbook.md has no section #{anchor}"
        assert seen.setdefault(anchor, rule.alert) == rule.alert, f"#{anchor} is shared"


def test_rules_read_only_the_contract_metrics() -> None:
    recorded = recorded_labels()
    for rule in load_rules():
        unknown = unknown_series(rule.expr, extra=recorded)
        assert not unknown, f"{rule.alert or rule.record} reads unknown series {unknown}"
        assert "faststream_" not in rule.expr, "alerts must not depend on FastStream's metrics"


def test_rules_match_only_labels_the_metrics_carry() -> None:
    recorded = recorded_labels()
    for rule in load_rules():
        wrong = unknown_labels(rule.expr, recorded)
        assert not wrong, f"{rule.alert or rule.record} matches labels not exported: {wrong}"


def test_objectives_sit_on_bucket_edges() -> None:
    assert m.DECISION_OBJECTIVE_SECONDS in m.DELAY_BUCKETS
    assert m.COUNT_OBJECTIVE_SECONDS in m.DELAY_BUCKETS
    for rule in load_rules():
        for bound in re.findall(r'le=~?"([^"|]+)', rule.expr):
            assert float(bound) in m.DELAY_BUCKETS, f"{rule.record}: le={bound} is not a bucket"


def test_local_scrape_config_renders_and_passes_promtool(tmp_path: Path) -> None:
    ports = {"VOTE_INGEST_PORT": "8081", "ANTIFRAUD_PORT": "8082"}
    ports |= {"TALLY_PORT": "8083", "LOTTERY_PORT": "8084"}
    template = string.Template(SCRAPE_TEMPLATE.read_text(encoding="utf-8"))
    rendered = template.substitute(REPO_DIR=str(ROOT), **ports)
    config = tmp_path / "prometheus.yml"
    config.write_text(rendered, encoding="utf-8")

    result = run_promtool("check", "config", str(config))

    assert result.returncode == 0, result.stdout + result.stderr
    document = yaml.safe_load(rendered)
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert set(jobs) == m.SERVICES
    assert document["global"]["scrape_interval"] == "5s"
    assert jobs["tally"]["static_configs"][0]["targets"] == ["127.0.0.1:8083"]
    assert document["rule_files"] == [str(RULES)]


def test_the_name_checks_catch_mistakes() -> None:
    assert unknown_series('sum(rate(votes_sumbitted_total{poll="a"}[5m]))') == {
        "votes_sumbitted_total"
    }
    assert unknown_series("sum by (poll) (rate(faststream_received_messages_total[5m]))")
    assert not unknown_series('up{job="tally"} == 0 or absent(up{job="tally"})')
    assert unknown_labels('votes_decided_total{verdicts="accepted"}', {}) == {
        ("votes_decided_total", "verdicts")
    }
    assert not unknown_labels('vote_count_delay_seconds_bucket{le="2.0",job="tally"}', {})


def test_promtool_rejects_an_expression_that_does_not_parse(tmp_path: Path) -> None:
    assert promql_errors({"broken": "sum(rate(votes_submitted_total[5m])"}, tmp_path)
    assert promql_errors({"fine": "sum(rate(votes_submitted_total[5m]))"}, tmp_path) is None


def test_the_slo_documents_queries_that_parse_and_read_contract_metrics(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "slo.md").read_text(encoding="utf-8")
    # `@ T` stands for the close time plus five minutes, in Unix seconds.
    blocks = [
        b.replace("@ T", "@ 1641603900") for b in re.findall(r"```promql\n(.*?)```", text, re.S)
    ]
    assert len(blocks) >= 4
    assert promql_errors({f"slo.md block {i}": b for i, b in enumerate(blocks)}, tmp_path) is None
    for block in blocks:
        assert not unknown_series(block), block
        assert not unknown_labels(block, {}), block
