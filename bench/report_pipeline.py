"""The whole-pipeline section of docs/benchmarks.md, from one run's results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.markdown import cell, table

Results = dict[str, Any]

SUSTAINED_TARGET = 0.8  # of the ingest-only maximum
DECISION_P99_TARGET = 1.0  # seconds, at 70% of the sustained rate
COUNT_P99_TARGET = 2.0


def _ms(seconds: float | None) -> str:
    return cell(None if seconds is None else seconds * 1000, 0)


def _met(ok: bool | None) -> str:
    if ok is None:
        return "not measured"
    return "met" if ok else "**missed**"


def targets(part: Results) -> list[tuple[str, str, str, str]]:
    """(what, measured, target, verdict) rows for the summary table."""
    ratio = part.get("ratio")
    rows = [
        (
            "pipeline sustained / ingest-only maximum",
            "-" if ratio is None else f"{ratio:.3f}x",
            f">= {SUSTAINED_TARGET}x",
            _met(None if ratio is None else ratio >= SUSTAINED_TARGET),
        )
    ]
    seventy = part.get("seventy")
    for key, label, limit in (
        ("decision", "decision delay p99 at 70%", DECISION_P99_TARGET),
        ("count", "count delay p99 at 70%", COUNT_P99_TARGET),
    ):
        p99: float | None = seventy["delays"][key]["p99"] if seventy else None
        if p99 is None or math.isnan(p99):
            rows.append((label, "-", f"< {limit * 1000:,.0f} ms", _met(None)))
        else:
            rows.append(
                (label, f"{p99 * 1000:,.0f} ms", f"< {limit * 1000:,.0f} ms", _met(p99 < limit))
            )
    return rows


def _step_rows(steps: Sequence[Results]) -> list[list[Any]]:
    rows = []
    for step in steps:
        load = step["load"]
        wait = step["worst_wait"]
        rows.append(
            [
                step["rate"],
                step["seconds"],
                load.get("completed_rate"),
                load.get("latency_ms", {}).get("99.0"),
                _ms(step["delays"]["decision"]["p99"]),
                _ms(step["delays"]["count"]["p99"]),
                " / ".join(_ms(wait.get(name)) for name in ("antifraud", "tally", "lottery")),
                step["undecided"],
                "yes" if step["held"] else f"no ({step['verdict']})",
            ]
        )
    return rows


STEP_HEADER = (
    "offered /s",
    "s",
    "answered /s",
    "ingest p99 ms",
    "decision p99 ms",
    "count p99 ms",
    "worst wait ms (antifraud / tally / lottery)",
    "202 but undecided",
    "held",
)


def _baselines(part: Results) -> list[str]:
    base = part.get("baselines") or {}
    perf = base.get("producer_performance") or {}
    sustained = part.get("sustained")
    rows: list[list[Any]] = [
        ["bare endpoint, same HTTP stack (ingest part)", part.get("bare_endpoint")],
        ["vote_ingest alone: the ingest-only maximum", part.get("ingest_max")],
        ["whole pipeline, held for the full duration", sustained],
        ["bare aiokafka producer, acks=all", base.get("aiokafka_producer")],
        ["Kafka ProducerPerformance (kafka-tools), acks=all", perf.get("rate")],
        ["bare aiokafka consumer", base.get("aiokafka_consumer")],
    ]
    for row in rows:
        rate = row[1]
        row.append(f"{sustained / rate:.3f}x" if sustained and rate else "-")
    lines = table(("what", "per second", "pipeline / this"), rows)
    lines.append("")
    if base:
        lines.append(
            f"Kafka baselines: {base['records']:,} vote records of {base['record_bytes']} bytes "
            "(the submissions the ingest publishes), written to topics of their own with 4 "
            "partitions."
        )
    if perf.get("summary"):
        s = perf["summary"]
        lines.append(
            f"ProducerPerformance: {s['mb']} MB/s, latency avg {s['avg']} ms, p50 "
            f"{s['p50']:.0f} ms, p99 {s['p99']:.0f} ms (its own figures, from the same "
            "payloads, without keys)."
        )
    elif perf.get("skipped"):
        lines.append(f"ProducerPerformance not measured: {perf['skipped']}")
    lines.append("")
    return lines


def _agreement(counts: dict[str, int] | None) -> str:
    if not counts:
        return "not checked"
    figures = ", ".join(f"{name.replace('_', ' ')} {n:,}" for name, n in counts.items())
    same = len(set(counts.values())) == 1
    return figures + (" (all equal)" if same else " (**not equal**)")


def _seventy(part: Results, image: str | None) -> list[str]:
    s = part["seventy"]
    lines = [f"### At 70%: {s['rate']:,.0f} votes/s offered", ""]
    if not part.get("sustained"):
        lines += [
            f"No rate held for the full duration, so this is 70% of "
            f"{part['seventy_of']:,.0f} votes/s, the highest step of the search that held.",
            "",
        ]
    ingest = s["ingest_ms"]
    rows = [
        [
            "ingest (202 answer, from the intended send time)",
            ingest["p50"],
            ingest["p99"],
            ingest["p999"],
        ],
    ]
    for key, label in (
        ("decision", "decision (decided_at - received_at)"),
        ("count", "count (counted_at - received_at)"),
    ):
        d = s["delays"][key]
        rows.append(
            [
                label,
                *(d[p] * 1000 if not math.isnan(d[p]) else None for p in ("p50", "p99", "p999")),
            ]
        )
    lines += table(("delay, ms", "p50", "p99", "p99.9"), rows)
    plan = part["plan"]
    lines += [
        "",
        f"Measured over the first {plan['steady_seconds']:.0f} s of the run (after "
        f"{plan['warmup_seconds']:.0f} s of warm-up): "
        f"{s['delays']['decision']['n']:,} votes decided, {s['delays']['count']['n']:,} "
        f"counted. Over the whole run {s['acknowledged']:,} votes got a 202; "
        f"{s['undecided']} of them had no decision after the run. Every bench vote of the "
        f"part, after the last drain: {_agreement(s.get('counts'))}.",
        "",
        "Catch-up after a stop of each consumer (the load going on at the same rate):",
        "",
    ]
    rows = []
    for outage in s["outages"]:
        rows.append(
            [
                outage["consumer"],
                outage["restarted_at"] - outage["stopped_at"],
                outage["ready_at"] - outage["restarted_at"],
                outage["backlog"],
                outage["catchup_seconds"],
                outage["drain_rate"],
            ]
        )
    lines += table(
        (
            "consumer",
            "stopped s",
            "restart to ready s",
            "records behind",
            "restart to lag < 2 s, s",
            "records/s while catching up",
        ),
        rows,
    )
    lines += ["", "Memory at the peak of the steady part (sampled every 2 s):", ""]
    rows = [[name, mem["rss_mib"], mem["pss_mib"]] for name, mem in sorted(s["memory"].items())]
    lines += table(("process (with its children)", "RSS MiB", "PSS MiB"), rows)
    lines += [
        "",
        "Postgres is its postmaster and every backend: RSS counts the shared buffers once per "
        "backend, PSS shares them out, so PSS is its real footprint.",
        "",
    ]
    lines += _cpu(s.get("cpu"))
    st = s["statements"]
    if st.get("per_vote") is not None:
        lines += [
            f"Postgres statements per vote over the steady part: **{st['per_vote']:.3f}** "
            f"({st['statements']:,} statements for {st['votes']:,} votes, from "
            "pg_stat_statements; by service:",
            "",
        ]
        rows = [[name, v["statements"], v["per_vote"]] for name, v in st["by_service"].items()]
        lines += table(("service", "statements", "per vote"), rows, digits=3)
        lines += ["", "Most frequent statements:", ""]
        lines += table(("statement (first 70 characters)", "calls"), st["top"])
        lines.append("")
    if image:
        lines += [
            f"![Throughput, delays and lag over the run at 70%]({image})",
            "",
            "Grey: the consumer is stopped; light grey: restarted and catching up.",
            "",
        ]
    return lines


def render(part: Results, image: str | None) -> list[str]:
    lines = ["## Whole pipeline: ingest, antifraud, tally and lottery together", ""]
    lines += _baselines(part)
    if part.get("ingest_measured_here"):
        lines += [
            "The ingest-only maximum was searched in this part (the ingest part did not run).",
            "",
        ]
    plan = part["plan"]
    lines += [
        f"A step holds when the ingest rule holds and every vote received after "
        f"{plan['warmup_seconds']:.0f} s waited less than 2 s for each consumer. Steps of "
        f"{plan['step_seconds']:.0f} s from {plan['start_fraction']:.0%} of the ingest-only "
        f"maximum, x{plan['growth']} each (down by the same factor while none has held); "
        f"a failed step is made again up to {plan.get('retries', 0)} times before it "
        "counts as failed; "
        f"the highest held step is then held for {plan['hold_seconds']:.0f} s "
        f"(x{plan.get('hold_step_down', 0.9)} lower if it fails, at most "
        f"{plan['hold_attempts']} holds"
        + (
            "; once one holds below a failed one, the rate halfway between is held too"
            if plan.get("hold_refine")
            else ""
        )
        + ").",
        "",
    ]
    lines += table(STEP_HEADER, _step_rows(part["search"] + part["holds"]))
    lines.append("")
    if part.get("sustained"):
        lines += [
            f"Sustained: **{part['sustained']:,.0f} votes/s** for "
            f"{plan['hold_seconds']:.0f} s, {part['ratio']:.3f}x the ingest-only maximum.",
            "",
        ]
    elif part["search"]:
        held = any(step["held"] for step in part["search"])
        lines += [
            (
                f"Not sustained: no rate held for {plan['hold_seconds']:.0f} s."
                if held
                else "No rate held: the pipeline was not sustained at any step."
            ),
            "",
        ]
    if part.get("seventy"):
        lines += _seventy(part, image)
    return lines


def _cpu(cpu: dict[str, dict[str, float | None]] | None) -> list[str]:
    if not cpu:
        return []
    rows: list[list[Any]] = [
        [name, use["cpu_s"], use["ms_per_vote"], use["cores"]]
        for name, use in sorted(cpu.items(), key=lambda item: -(item[1]["cpu_s"] or 0.0))
    ]
    total = sum(use["cpu_s"] or 0.0 for use in cpu.values())
    votes_ms = [use["ms_per_vote"] for use in cpu.values() if use["ms_per_vote"] is not None]
    cores = [use["cores"] for use in cpu.values() if use["cores"] is not None]
    rows.append(["all of them", total, sum(votes_ms) if votes_ms else None, sum(cores)])
    lines = ["CPU over the same steady part (each process with its children):", ""]
    lines += table(("process", "CPU s", "CPU ms per vote", "cores busy"), rows)
    return [*lines, ""]
