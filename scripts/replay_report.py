"""What a replay found, and the summary it prints at the end. No I/O."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTION_ZH = {"excellent": "优", "good": "良", "fair": "中", "poor": "差"}
BAR_WIDTH = 36


def n(value: int) -> str:
    return f"{value:,}"


@dataclass
class Report:
    """What a replay found; `failures` is empty when every check held."""

    poll_id: str
    commitment: str = ""
    verifier_exit: int | None = None
    verifier_output: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    fraud_planned: int = 0
    fraud_rejected: int = 0
    histogram: dict[int, int] = field(default_factory=dict)
    winners: list[dict[str, Any]] = field(default_factory=list)
    audit_file: Path | None = None
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    def check(self, holds: bool, failure: str) -> None:
        self.checks += 1
        if not holds:
            self.failures.append(failure)

    @property
    def verified(self) -> bool:
        return self.verifier_exit == 0

    @property
    def ok(self) -> bool:
        return self.verified and not self.failures


def _results(report: Report) -> list[str]:
    counts = report.results.get("counts", {})
    shown = "  ".join(f"{OPTION_ZH.get(k, k)} {k} {n(int(v))}" for k, v in counts.items())
    final = "final" if report.results.get("final") else "NOT final"
    return [f"Results ({final}): {shown}  total {n(int(report.results.get('total', 0)))}"]


def _refusals(report: Report) -> list[str]:
    share = "all" if report.fraud_rejected == report.fraud_planned else "only"
    lines = [
        f"Refused by antifraud, by reason: {share} {n(report.fraud_rejected)} of "
        f"{n(report.fraud_planned)} fraudulent votes"
    ]
    for reason, total in report.rejected.most_common():
        kinds = ", ".join(
            f"{kind} {n(count)}"
            for (r, kind), count in report.rejected_by_kind.most_common()
            if r == reason
        )
        lines.append(f"  {reason:<20} {n(total):>7}   {kinds}")
    lines.append("  (fraud: burst, hammer, replayed; honest mistakes: typo, slow, again)")
    return lines


def _days(count: int) -> str:
    return "day" if count == 1 else "days"


def _histogram(report: Report) -> list[str]:
    lines = ["Entries by days voted (staff console):"]
    top = max(report.histogram.values(), default=1) or 1
    for days, count in sorted(report.histogram.items()):
        bar = "#" * max(1 if count else 0, round(BAR_WIDTH * count / top))
        lines.append(f"  {days:>2} {_days(days):<4} {n(count):>6}  {bar}")
    return lines


def _winners(report: Report) -> list[str]:
    winners = [w for w in report.winners if w["role"] == "winner"]
    eligible = sum(count for days, count in report.histogram.items() if days > 0)
    lines = [f"Winners ({len(winners)} of {n(eligible)} eligible entries, masked):"]
    for w in report.winners:
        tag = "" if w["role"] == "winner" else "reserve "
        lines.append(
            f"  {tag}{w['rank']:>2}  {w['name_masked']:<6} {w['phone_masked']}  "
            f"{w['days']:>2} {_days(w['days'])}"
        )
    return lines


def _verdict(report: Report) -> list[str]:
    lines = [
        f"Audit record: {report.audit_file}",
        f"Verifier (python -m services.lottery.verify): exit {report.verifier_exit}",
        *(f"  {line}" for line in report.verifier_output.splitlines()),
        "",
    ]
    if report.ok:
        return [*lines, f"All {report.checks} checks held: the draw verifies."]
    lines.append(f"FAILED: {len(report.failures)} of {report.checks} checks:")
    return lines + [f"  - {failure}" for failure in report.failures]


def summary(report: Report) -> list[str]:
    """The lines printed at the end of a replay."""
    lines: list[str] = []
    for part in (_results, _refusals, _histogram, _winners, _verdict):
        lines += ["", *part(report)]
    return lines
