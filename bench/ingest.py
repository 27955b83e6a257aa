"""Ingest benchmark: the highest sustained vote rate, and latency at 70% of it, for the
ingest service and for a bare endpoint on the same HTTP stack, in the same run.

Both servers are launched by the bench the same way (``python -m <module>``, one
uvicorn process on uvloop and httptools, the same environment) and receive the same
requests: the default mix, each vote with a signed voter token and a captcha id,
``X-Forwarded-For`` set (the bench calls them directly from a trusted address).

The rate is stepped up geometrically; a step *holds* when at most ``max_error_fraction``
of its votes got a 5xx or no answer, p99 latency (from the intended send time) is at
most ``max_p99_ms``, and answers kept up with arrivals (``min_completion`` of the offered
rate). After the first step that does not hold, the gap to the last one that did is
bisected. The maximum is the highest step that held; latency is then measured in a
separate, longer run at 70% of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.env import BENCH_POLL, BenchEnv, Process, free_port, launch
from bench.loadgen import LoadConfig, LoadReport, Mix, run_load

log = logging.getLogger(__name__)

# A generator that dispatches votes later than this (p99) is itself saturated; a step
# that fails then says so rather than blaming the server.
GENERATOR_LAG_LIMIT_MS = 20.0


@dataclass(frozen=True)
class StepRule:
    max_p99_ms: float = 250.0
    max_error_fraction: float = 0.01
    min_completion: float = 0.97

    def verdict(self, report: LoadReport) -> tuple[bool, str]:
        p99 = report.book.percentiles_ms().get(99.0, math.inf)
        errors = report.book.error_fraction()
        completion = report.completed_rate / report.offered_rate
        if errors > self.max_error_fraction:
            return False, f"errors {errors:.1%}"
        if p99 > self.max_p99_ms:
            return False, f"p99 {p99:.0f} ms"
        if completion < self.min_completion:
            return False, f"answered {completion:.0%} of the offered rate"
        return True, "held"


@dataclass(frozen=True)
class SearchPlan:
    start_rate: float = 250.0
    factor: float = 1.5
    ceiling: float = 40_000.0
    step_seconds: float = 10.0
    refine_steps: int = 2
    retries: int = 1  # a step that fails is run again once: the machine is shared
    measure_seconds: float = 30.0
    warmup_seconds: float = 3.0
    settle_seconds: float = 3.0


@dataclass
class Step:
    rate: float
    report: LoadReport
    server_cpu_seconds: float
    held: bool
    why: str

    @property
    def generator_limited(self) -> bool:
        return self.report.dispatch_lag_ms() > GENERATOR_LAG_LIMIT_MS

    @property
    def server_cpu_ms_per_request(self) -> float:
        answered = self.report.book.answered
        return 1000 * self.server_cpu_seconds / answered if answered else math.nan

    def row(self) -> dict[str, Any]:
        pct = self.report.book.percentiles_ms()
        return {
            "rate": round(self.rate, 1),
            "completed_rate": round(self.report.completed_rate, 1),
            "p50_ms": pct.get(50.0),
            "p99_ms": pct.get(99.0),
            "p999_ms": pct.get(99.9),
            "errors": self.report.book.error_fraction(),
            "statuses": dict(self.report.book.statuses),
            "server_cpu_ms_per_request": round(self.server_cpu_ms_per_request, 3),
            "client_cpu_seconds": round(self.report.client_cpu_seconds, 2),
            "dispatch_lag_p99_ms": self.report.dispatch_lag_ms(),
            "generator_limited": self.generator_limited,
            "held": self.held,
            "why": self.why,
        }


@dataclass
class Search:
    target: str
    steps: list[Step] = field(default_factory=list)
    at_70: Step | None = None

    @property
    def max_rate(self) -> float | None:
        held = [s.rate for s in self.steps if s.held]
        return max(held) if held else None

    @property
    def ceiling_generator_limited(self) -> bool:
        """The first failing step failed because the generator, not the server, fell behind."""
        failed = [s for s in self.steps if not s.held]
        return bool(failed) and min(failed, key=lambda s: s.rate).generator_limited

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "max_rate": self.max_rate,
            "ceiling_generator_limited": self.ceiling_generator_limited,
            "steps": [s.row() for s in sorted(self.steps, key=lambda s: s.rate)],
            "at_70": self.at_70.row() if self.at_70 else None,
        }


ConfigFor = Callable[[float, float], LoadConfig]


async def _step(process: Process, config: LoadConfig, rule: StepRule, plan: SearchPlan) -> Step:
    step = await _one_step(process, config, rule, plan.settle_seconds)
    for _ in range(plan.retries):
        if step.held:
            break
        step = await _one_step(process, config, rule, plan.settle_seconds)
    return step


async def _one_step(process: Process, config: LoadConfig, rule: StepRule, settle: float) -> Step:
    cpu_before = process.cpu_seconds()
    report = await run_load(config)
    cpu = process.cpu_seconds() - cpu_before
    held, why = rule.verdict(report)
    step = Step(config.rate, report, cpu, held, why)
    log.info("%s: %s", process.name, step.row())
    await asyncio.sleep(settle if held else settle * 2)
    return step


async def search_max_rate(
    process: Process, config_for: ConfigFor, rule: StepRule, plan: SearchPlan
) -> Search:
    search = Search(process.name)
    await run_load(config_for(min(100.0, plan.start_rate), plan.warmup_seconds))
    rate = plan.start_rate
    good: float | None = None
    bad: float | None = None
    while rate <= plan.ceiling:
        step = await _step(process, config_for(rate, plan.step_seconds), rule, plan)
        search.steps.append(step)
        if not step.held:
            bad = rate
            break
        good = rate
        rate *= plan.factor
    if good is not None and bad is not None:
        for _ in range(plan.refine_steps):
            middle = (good + bad) / 2
            step = await _step(process, config_for(middle, plan.step_seconds), rule, plan)
            search.steps.append(step)
            good, bad = (middle, bad) if step.held else (good, middle)
    if search.max_rate is not None:
        rate_70 = 0.7 * search.max_rate
        measure = config_for(rate_70, plan.measure_seconds)
        search.at_70 = await _one_step(process, measure, rule, plan.settle_seconds)
    return search


def vote_config(env: BenchEnv, base_url: str, mix: Mix) -> ConfigFor:
    def config_for(rate: float, seconds: float) -> LoadConfig:
        return LoadConfig(
            base_url=base_url,
            poll_id=BENCH_POLL,
            rate=rate,
            duration=seconds,
            mix=mix,
            forwarded_for=True,
            sessions="mint",
            captchas="mint",
            captcha_secret=env.captcha_secret,
            voter_token_secret=env.voter_token_secret,
            max_connections=512,
            request_timeout=10.0,
        )

    return config_for


@dataclass
class IngestResult:
    ingest: Search
    bare: Search
    rule: StepRule
    plan: SearchPlan

    @property
    def ratio(self) -> float | None:
        if self.ingest.max_rate is None or not self.bare.max_rate:
            return None
        return self.ingest.max_rate / self.bare.max_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingest": self.ingest.to_dict(),
            "bare": self.bare.to_dict(),
            "ratio": self.ratio,
            "rule": self.rule.__dict__,
            "plan": self.plan.__dict__,
        }


def start_ingest(env: BenchEnv) -> Process:
    port = free_port()
    service_env = {**env.service_env, "VOTE_INGEST_PORT": str(port)}
    return launch("vote_ingest", ["services.vote_ingest.main"], service_env, port, env.log_dir)


def start_bare(env: BenchEnv) -> Process:
    port = free_port()
    return launch(
        "bare", ["bench.bare_app", "--port", str(port)], env.service_env, port, env.log_dir
    )


async def run_ingest(env: BenchEnv, rule: StepRule, plan: SearchPlan, mix: Mix) -> IngestResult:
    """Search both servers, one at a time, so they never share the cores."""
    searches: dict[str, Search] = {}
    for name, starter in (("vote_ingest", start_ingest), ("bare", start_bare)):
        process = await asyncio.to_thread(starter, env)
        try:
            searches[name] = await search_max_rate(
                process, vote_config(env, process.url, mix), rule, plan
            )
        finally:
            await asyncio.to_thread(process.stop)
    return IngestResult(searches["vote_ingest"], searches["bare"], rule, plan)
