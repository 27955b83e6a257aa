"""The whole-pipeline benchmark's arithmetic, verdicts, report and plot (no stack needed)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bench import plot, report, report_pipeline
from bench.catchup import Catchup, fastest
from bench.kafka_baselines import parse_producer_performance
from bench.observe import (
    BENCH_PROCESS,
    VoteTimes,
    cpu_per_vote,
    delays,
    percentile,
    statement_owner,
    statements_per_vote,
    worst_waits,
)
from bench.pipeline import PipelinePlan, PipelineStep, Runner

PERF_OUTPUT = """\
5001 records sent, 1000.2 records/sec (0.34 MB/sec), 12.1 ms avg latency, 300.0 ms max latency.
200000 records sent, 98765.4 records/sec (33.51 MB/sec), 21.43 ms avg latency, 410.00 ms max \
latency, 12 ms 50th, 80 ms 95th, 150 ms 99th, 390 ms 99.9th.
"""


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))


def test_waits_are_per_consumer() -> None:
    votes = [
        VoteTimes(received=0.0, decided=0.5, accepted=True, counted=0.9, recorded=3.0),
        VoteTimes(received=1.0, decided=2.8, accepted=False, counted=None, recorded=None),
    ]
    worst = worst_waits(votes)
    assert worst == pytest.approx({"antifraud": 1.8, "tally": 0.4, "lottery": 2.5})
    found = delays(votes)
    assert found["decision"]["n"] == 2
    assert found["decision"]["max"] == pytest.approx(1.8)
    assert found["count"]["n"] == 1
    assert found["count"]["p99"] == pytest.approx(0.9)


def _step(**changes: Any) -> PipelineStep:
    fields: dict[str, Any] = {
        "rate": 1000.0,
        "seconds": 20.0,
        "load": {},
        "load_held": True,
        "why": "held",
        "worst_wait": {"antifraud": 0.3, "tally": 0.2, "lottery": 0.2},
        "delays": {},
        "undecided": 0,
        "drained": True,
    }
    fields.update(changes)
    return PipelineStep(**fields)


def test_a_step_holds_only_when_every_consumer_kept_up() -> None:
    assert _step().held
    late = _step(worst_wait={"antifraud": 0.3, "tally": 2.0, "lottery": 0.1})
    assert not late.held and "tally" in late.verdict()
    assert not _step(undecided=3).held
    assert not _step(drained=False).held
    refused = _step(load_held=False, why="p99 400 ms")
    assert not refused.held and refused.verdict() == "p99 400 ms"


def _search(capacity: float, stalls: frozenset[int] = frozenset(), **plan: Any) -> list[int]:
    """The rates a search tries against a pipeline that holds up to `capacity` (and
    fails once, as a stall would, at each rate in `stalls`); then the rate it found."""
    runner = object.__new__(Runner)
    runner.plan = PipelinePlan(**plan)
    tried: list[float] = []

    async def step(rate: float, seconds: float) -> PipelineStep:
        stalled = round(rate) in stalls and round(rate) not in map(round, tried)
        tried.append(rate)
        return _step(rate=rate, load_held=rate <= capacity and not stalled, why="p99")

    runner.step = step  # type: ignore[method-assign]
    _, good = asyncio.run(runner.search(1000.0))
    return [round(rate) for rate in tried] + [round(good or 0)]


def test_the_search_climbs_retries_a_failed_step_once_and_bisects() -> None:
    # 400 and 480 hold, 576 fails twice; the bisection tries 528 (fails twice).
    assert _search(500.0, refine_steps=1) == [400, 480, 576, 576, 528, 528, 480]
    # A stall at 480 is retried and the search goes on.
    assert _search(600.0, frozenset({480}), refine_steps=0) == [400, 480, 480, 576, 691, 691, 576]


def _hold(capacity: float, start: float, **plan: Any) -> list[int]:
    """The rates the full-length holds try from `start` against a pipeline that holds
    up to `capacity`; then the sustained rate found."""
    runner = object.__new__(Runner)
    runner.plan = PipelinePlan(**plan)
    tried: list[float] = []

    async def step(rate: float, seconds: float) -> PipelineStep:
        assert seconds == runner.plan.hold_seconds
        tried.append(rate)
        return _step(rate=rate, load_held=rate <= capacity, why="p99")

    runner.step = step  # type: ignore[method-assign]
    holds, sustained = asyncio.run(runner.hold(start))
    assert [h.rate for h in holds] == tried
    return [round(rate) for rate in tried] + [round(sustained or 0)]


def test_a_failed_hold_steps_down_then_the_rate_halfway_back_is_held() -> None:
    # 1000 and 800 fail, 640 holds, halfway to 800 (720) holds: 720 is sustained.
    assert _hold(750.0, 1000.0) == [1000, 800, 640, 720, 720]
    # Halfway fails: the lower hold stands.
    assert _hold(700.0, 1000.0) == [1000, 800, 640, 720, 640]
    # A first hold that holds is the answer, with nothing above it to refine towards.
    assert _hold(2000.0, 1000.0) == [1000, 1000]
    # Nothing holds within the attempts: no sustained rate, and no refinement.
    assert _hold(100.0, 1000.0) == [1000, 800, 640, 0]
    assert _hold(750.0, 1000.0, hold_refine=0) == [1000, 800, 640, 640]


def test_the_search_comes_down_when_the_first_step_fails() -> None:
    assert _search(300.0, refine_steps=0) == [400, 400, 333, 333, 278, 278]
    # Nothing holds down to a tenth of the ingest-only maximum: no sustained rate.
    assert _search(10.0, refine_steps=0, retries=0)[-1] == 0


def test_statements_are_attributed_by_table() -> None:
    assert statement_owner("INSERT INTO decisions (vote_id) SELECT ...") == "antifraud"
    assert statement_owner("WITH batch AS (...) INSERT INTO counted_votes ...") == "tally"
    assert statement_owner("INSERT INTO voter_days ...") == "lottery"
    assert statement_owner("SELECT 1") == "other"
    assert statement_owner("RESET ALL") == "connection resets on release"
    assert statement_owner("COMMIT") == "transaction control (BEGIN, COMMIT)"
    before = {"INSERT INTO decisions x": 10, "SELECT 1": 5}
    after = {"INSERT INTO decisions x": 30, "SELECT 1": 5, "UPDATE counts y": 4}
    found = statements_per_vote(before, after, votes=100)
    assert found["statements"] == 24
    assert found["per_vote"] == pytest.approx(0.24)
    assert found["by_service"]["antifraud"]["statements"] == 20
    assert found["by_service"]["tally"]["statements"] == 4
    assert "other" not in found["by_service"]


def test_producer_performance_summary_is_the_last_full_line() -> None:
    found = parse_producer_performance(PERF_OUTPUT)
    assert found is not None
    assert found["records"] == 200000
    assert found["rate"] == pytest.approx(98765.4)
    assert found["p999"] == 390
    assert parse_producer_performance("Exception in thread main") is None


def _results(sustained: float | None, decision_p99: float, count_p99: float) -> dict[str, Any]:
    step = _step().to_dict()
    step["load"] = {"completed_rate": 999.0, "latency_ms": {"99.0": 12.0}}
    step["delays"] = delays([VoteTimes(0.0, 0.1, True, 0.3, 0.2)])
    seconds = 5
    seventy = {
        "rate": 700.0,
        "started": 1000.0,
        "ingest_ms": {"p50": 2.0, "p99": 9.0, "p999": 20.0},
        "delays": {
            "decision": {"n": 10, "p50": 0.1, "p99": decision_p99, "p999": 1.0, "max": 1.0},
            "count": {"n": 8, "p50": 0.2, "p99": count_p99, "p999": 2.0, "max": 2.0},
        },
        "acknowledged": 3500,
        "undecided": 0,
        "counts": {"accepted": 9, "counted_rows": 9, "totals": 9, "days_voted": 9},
        "outages": [
            {
                "consumer": "tally",
                "stopped_at": 1001.0,
                "restarted_at": 1002.0,
                "ready_at": 1002.5,
                "backlog": 700,
                "caught_up_at": 1003.0,
                "catchup_seconds": 1.0,
                "drain_rate": 700.0,
            }
        ],
        "memory": {"vote_ingest": {"rss_mib": 80.0, "pss_mib": 70.0}},
        "cpu": cpu_per_vote({"vote_ingest": 10.0}, {"vote_ingest": 13.5}, 5.0, 7000),
        "statements": statements_per_vote({}, {"INSERT INTO counted_votes": 7}, 70),
        "timeline": {
            "seconds": seconds,
            "answered": [700] * seconds,
            "decided": [690] * seconds,
            "counted": [0, 0, 1400, 700, 700],
            "decision_p50": [0.1] * seconds,
            "decision_p99": [0.3, 0.3, math.nan, 0.3, 0.3],
            "count_p50": [0.2] * seconds,
            "count_p99": [0.5, 1.5, 1.5, 0.5, 0.5],
            "lag": [
                {"t": float(t), "antifraud": 3, "tally": 700 * (t == 2), "lottery": 1}
                for t in range(seconds)
            ],
        },
    }
    return {
        "ingest_max": 1000.0,
        "ingest_measured_here": False,
        "bare_endpoint": 5000.0,
        "search": [step],
        "holds": [step],
        "sustained": sustained,
        "ratio": None if sustained is None else sustained / 1000.0,
        "seventy": seventy if sustained else None,
        "baselines": {
            "records": 1000,
            "record_bytes": 420,
            "aiokafka_producer": 60000.0,
            "aiokafka_consumer": 400000.0,
            "producer_performance": {
                "rate": 98765.4,
                "summary": parse_producer_performance(PERF_OUTPUT),
            },
        },
        "plan": asdict(PipelinePlan(warmup_seconds=5.0, steady_seconds=60.0)),
    }


def test_cpu_is_split_per_vote_and_per_core() -> None:
    before = {"tally": 1.0, "kafka": 5.0, BENCH_PROCESS: 2.0}
    after = {"tally": 3.0, "kafka": 9.0, BENCH_PROCESS: 2.5, "lottery": 4.0}
    use = cpu_per_vote(before, after, seconds=10.0, votes=2000)
    assert use["tally"] == {"cpu_s": 2.0, "ms_per_vote": 1.0, "cores": 0.2}
    assert use["kafka"]["cores"] == 0.4
    assert use[BENCH_PROCESS]["ms_per_vote"] == 0.25
    # A process first seen after the start reports nothing rather than its whole life.
    assert use["lottery"]["cpu_s"] == 0.0
    assert cpu_per_vote(before, after, seconds=10.0, votes=0)["tally"]["ms_per_vote"] is None


def test_targets_are_judged_from_the_measured_figures() -> None:
    met = report_pipeline.targets(_results(900.0, 0.4, 1.2))
    assert [row[3] for row in met] == ["met", "met", "met"]
    assert met[0][1] == "0.900x"
    missed = report_pipeline.targets(_results(500.0, 1.5, 2.5))
    assert [row[3] for row in missed] == ["**missed**"] * 3
    unmeasured = report_pipeline.targets(_results(None, 0.4, 1.2))
    assert [row[3] for row in unmeasured] == ["not measured"] * 3


def test_report_names_every_required_figure(tmp_path: Path) -> None:
    results = _results(900.0, 0.4, 1.2)
    text = "\n".join(report_pipeline.render(results, "benchmarks-pipeline.png"))
    for expected in (
        "ProducerPerformance",
        "bare aiokafka producer",
        "bare aiokafka consumer",
        "bare endpoint",
        "Sustained: **900 votes/s**",
        "records behind",
        "RSS MiB",
        "statements per vote",
        "p99.9",
        "](benchmarks-pipeline.png)",
        "| 12.0 |",  # the step's ingest p99
        "days voted 9 (all equal)",
        "| vote_ingest | 3.5 | 0.5 | 0.7 |",  # CPU s, ms per vote, cores
    ):
        assert expected in text
    image = tmp_path / "pipeline.png"
    plot.render(results["seventy"], image)
    assert image.read_bytes().startswith(b"\x89PNG")
    assert image.stat().st_size > 10_000


def test_short_runs_keep_the_fastest_and_report_every_run() -> None:
    runs = [Catchup("bare aiokafka", 1000, seconds, 0, seconds + 0.1) for seconds in (2, 1, 4)]
    best = fastest(runs)
    assert best.rate == 1000.0
    assert best.extra["runs"] == [500.0, 1000.0, 250.0]
    assert report._runs(best.to_dict()) == "500 / 1,000 / 250"
    assert report._runs(Catchup("antifraud", 10, 1.0, 0, 1.0).to_dict()) == "one run"


def test_without_a_full_hold_the_seventy_run_says_what_it_is_seventy_percent_of() -> None:
    results = _results(900.0, 0.4, 1.2)
    results.update(sustained=None, ratio=None, seventy_of=950.0)
    text = "\n".join(report_pipeline.render(results, None))
    assert "Not sustained: no rate held for 300 s." in text
    assert "this is 70% of 950 votes/s, the highest step of the search that held" in text
    assert report_pipeline.targets(results)[0][3] == "not measured"
