"""The whole pipeline under load: ingest, antifraud, tally and lottery on one machine.

1. **Sustained rate.** Steps of a constant arrival rate through vote_ingest, from a
   fraction of the ingest-only maximum upwards. A step holds when the load generator's
   rule holds (few errors, p99 within bounds, answers keep pace) *and* no consumer fell
   more than 2 s behind: for every vote received in the step (after a short warm-up),
   the time it waited for each consumer stays under 2 s - antifraud from ``received_at``
   to its decision, tally and lottery from the decision to their commit. The highest
   step that held is then held for the full duration (5 minutes), lowered by a fifth
   (``hold_step_down``) each time it does not; once a hold succeeds below a failed one,
   the rate halfway between is held too (``hold_refine``).
2. **At 70% of it**: ingest latency, decision and count delays from ``received_at``,
   RSS per process, Postgres statements per vote; then each consumer in turn is stopped
   for a minute and restarted while the load goes on, and the time it takes to catch up
   (its lag back under 2 s) is measured. The timeline is plotted.
3. **Baselines** in the same run: a bare aiokafka producer and consumer, and Kafka's own
   ``ProducerPerformance`` tool, on the same broker with the same vote records.

Every delay comes from the services' own tables: ``decisions.decided_at``,
``counted_votes.counted_at`` and ``voter_days.recorded_at`` against the vote's
``received_at``, so nothing is sampled or estimated.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench import catchup
from bench.env import BenchEnv, Process, free_port, launch
from bench.ingest import ConfigFor, SearchPlan, StepRule, search_max_rate, start_ingest, vote_config
from bench.kafka_baselines import baselines
from bench.loadgen import LoadReport, Mix, run_load
from bench.observe import (
    CONSUMERS,
    GROUP_TOPIC,
    LagSample,
    LagWatch,
    MemoryWatch,
    Statements,
    VoteTimes,
    counts_agree,
    cpu_per_vote,
    cpu_seconds,
    delays,
    infrastructure_pids,
    percentile,
    statements_per_vote,
    undecided,
    vote_times,
    worst_waits,
)
from scripts.stack.settings import BACKGROUND_NICE
from shared.drain import PipelineProbe

log = logging.getLogger("bench")

LAG_LIMIT = 2.0  # seconds a vote may wait for any one consumer
SERVICES = ("vote_ingest", *CONSUMERS)


@dataclass(frozen=True)
class PipelinePlan:
    start_fraction: float = 0.4  # first step, of the ingest-only maximum
    growth: float = 1.2  # each further step
    step_seconds: float = 20.0
    refine_steps: int = 1
    retries: int = 1  # a failed step is made once more before it counts as failed
    lowest_fraction: float = 0.1  # when the first step fails, search down to this
    hold_seconds: float = 300.0
    hold_attempts: int = 3
    hold_step_down: float = 0.8  # the next hold, after one that failed
    hold_refine: int = 1  # holds halfway between a failed hold and the one that held
    warmup_seconds: float = 5.0
    steady_seconds: float = 60.0  # at 70%, before the first consumer is stopped
    stop_seconds: float = 60.0
    recover_seconds: float = 180.0  # waiting for a restarted consumer at most this long
    settle_seconds: float = 10.0
    baseline_records: int = 200_000


QUICK_PLAN = PipelinePlan(
    step_seconds=8.0,
    refine_steps=0,
    hold_seconds=20.0,
    hold_attempts=2,
    hold_refine=0,
    warmup_seconds=2.0,
    steady_seconds=12.0,
    stop_seconds=10.0,
    recover_seconds=40.0,
    settle_seconds=3.0,
    baseline_records=50_000,
)


# --------------------------------------------------------------------------- the services


class Services:
    """The pipeline's four services, launched by the bench like the ingest benchmark's.

    The consumers run behind the edge (``BACKGROUND_NICE``), as the local stack runs
    them: the voter waits on the edge, the consumers have seconds of room.
    """

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.running: dict[str, Process] = {}

    def start(self, name: str) -> Process:
        if name == "vote_ingest":
            process = start_ingest(self.env)
        else:
            port = free_port()
            service_env = {**self.env.service_env, f"{name.upper()}_PORT": str(port)}
            process = launch(
                name,
                [f"services.{name}.main"],
                service_env,
                port,
                self.env.log_dir,
                nice=BACKGROUND_NICE,
            )
        self.running[name] = process
        return process

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is not None:
            process.stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


async def skip_to_end(bootstrap: str) -> None:
    """Commit every consumer group at its topic's end: earlier parts' records stay unread."""
    await catchup.create_topics(bootstrap, *set(GROUP_TOPIC.values()))
    probe = PipelineProbe({"bootstrap_servers": bootstrap})
    await probe.start()
    try:
        for group, topic in GROUP_TOPIC.items():
            ends = await probe.ends(topic)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            try:
                consumer.assign(list(ends))
                await consumer.commit(ends)
            finally:
                await consumer.stop()
    finally:
        await probe.stop()


# --------------------------------------------------------------------------- steps


@dataclass
class PipelineStep:
    rate: float
    seconds: float
    load: dict[str, Any]
    load_held: bool
    why: str
    worst_wait: dict[str, float]
    delays: dict[str, dict[str, float]]
    undecided: int
    drained: bool

    @property
    def held(self) -> bool:
        return (
            self.load_held
            and self.drained
            and not self.undecided
            and all(wait < LAG_LIMIT for wait in self.worst_wait.values())
        )

    def verdict(self) -> str:
        if not self.load_held:
            return self.why
        if not self.drained:
            return "consumers did not drain"
        if self.undecided:
            return f"{self.undecided} acknowledged votes undecided"
        late = {k: round(v, 2) for k, v in self.worst_wait.items() if v >= LAG_LIMIT}
        return f"lag over {LAG_LIMIT:g} s: {late}" if late else "held"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "held": self.held, "verdict": self.verdict()}


async def bisect(
    good: float | None, bad: float | None, times: int, holds: Callable[[float], Awaitable[bool]]
) -> float | None:
    """Halve the gap between a rate that held and a higher one that did not, `times`
    times; the highest rate that held."""
    for _ in range(times):
        if good is None or bad is None:
            break
        middle = (good + bad) / 2
        good, bad = (middle, bad) if await holds(middle) else (good, middle)
    return good


class Runner:
    def __init__(
        self, env: BenchEnv, plan: PipelinePlan, mix: Mix, services: Services, watch: LagWatch
    ) -> None:
        self.env = env
        self.plan = plan
        self.rule = StepRule()
        self.services = services
        self.watch = watch
        self.config_for: ConfigFor = vote_config(env, services.running["vote_ingest"].url, mix)

    async def step(self, rate: float, seconds: float) -> PipelineStep:
        report = await run_load(self.config_for(rate, seconds))
        origin = report.started_at.timestamp()
        drained = await self.watch.drained(within=max(60.0, seconds))
        since = origin + self.plan.warmup_seconds
        votes = await vote_times(self.env.database_url, since, origin + seconds + 1)
        held, why = self.rule.verdict(report)
        step = PipelineStep(
            rate=rate,
            seconds=seconds,
            load=report.summary(),
            load_held=held,
            why=why,
            worst_wait=worst_waits(votes),
            delays=delays(votes),
            undecided=await undecided(self.env.database_url, report),
            drained=drained,
        )
        log.info(
            "pipeline: %.0f/s for %.0f s: %s (worst waits %s)",
            rate,
            seconds,
            step.verdict(),
            {k: round(v, 2) for k, v in step.worst_wait.items()},
        )
        return step

    async def search(self, ingest_max: float) -> tuple[list[PipelineStep], float | None]:
        """Up by `growth` from the first step while steps hold; down from it while none
        has held yet (to `lowest_fraction` of the ingest-only maximum); then bisect."""
        steps: list[PipelineStep] = []
        rate = ingest_max * self.plan.start_fraction
        good: float | None = None
        bad: float | None = None
        while True:
            if await self._holds(rate, steps):
                good = rate
                if bad is not None or rate >= ingest_max:
                    break
                rate = min(ingest_max, rate * self.plan.growth)
            else:
                bad = rate
                if good is not None or rate <= ingest_max * self.plan.lowest_fraction:
                    break
                rate /= self.plan.growth
        return steps, await bisect(
            good, bad, self.plan.refine_steps, lambda r: self._holds(r, steps)
        )

    async def _holds(self, rate: float, steps: list[PipelineStep]) -> bool:
        """A step at `rate`, made again (up to `retries` times) when it fails: one stall
        of the shared machine (a checkpoint, another process) is not the pipeline's limit."""
        for _ in range(1 + self.plan.retries):
            step = await self.step(rate, self.plan.step_seconds)
            steps.append(step)
            if step.held:
                return True
        return False

    async def hold(self, rate: float) -> tuple[list[PipelineStep], float | None]:
        """Hold `rate` for the full duration, `hold_step_down` lower after each failure;
        once a hold succeeds below one that failed, try halfway between (`hold_refine`
        times): the step down alone would leave the sustained rate up to a step short."""
        holds: list[PipelineStep] = []
        good: float | None = None
        bad: float | None = None
        for _ in range(self.plan.hold_attempts):
            if await self._hold_once(rate, holds):
                good = rate
                break
            bad = rate
            rate *= self.plan.hold_step_down
        return holds, await bisect(
            good, bad, self.plan.hold_refine, lambda r: self._hold_once(r, holds)
        )

    async def _hold_once(self, rate: float, holds: list[PipelineStep]) -> bool:
        log.info("pipeline: holding %.0f/s for %.0f s", rate, self.plan.hold_seconds)
        step = await self.step(rate, self.plan.hold_seconds)
        holds.append(step)
        return step.held


# --------------------------------------------------------------------------- at 70%


@dataclass
class Outage:
    consumer: str
    stopped_at: float
    restarted_at: float
    ready_at: float
    backlog: int  # records behind when it came back
    caught_up_at: float | None

    def to_dict(self) -> dict[str, Any]:
        catchup_s = None if self.caught_up_at is None else self.caught_up_at - self.restarted_at
        return {
            **asdict(self),
            "catchup_seconds": catchup_s,
            "drain_rate": self.backlog / catchup_s if catchup_s else None,
        }


async def _await_caught_up(
    watch: LagWatch, consumer: str, rate: float, within: float
) -> tuple[int, float | None]:
    """Records behind at first sight after the restart, and when lag fell under 2 s."""
    deadline = time.monotonic() + within
    backlog = 0
    while time.monotonic() < deadline:
        sample = await watch.sample()
        backlog = max(backlog, sample.lag[consumer])
        if sample.lag[consumer] <= LAG_LIMIT * rate:
            return backlog, sample.at
        await asyncio.sleep(0.5)
    return backlog, None


async def at_seventy(
    env: BenchEnv, plan: PipelinePlan, runner: Runner, services: Services, rate: float
) -> dict[str, Any]:
    """Steady load at ``rate``, then a one-minute stop of each consumer in turn."""
    watch = runner.watch
    statements = Statements(env.database_url)
    await statements.enable()
    pids = {name: process.pid for name, process in services.running.items()}
    pids |= infrastructure_pids(env)
    memory = MemoryWatch(pids)
    per_outage = plan.stop_seconds + plan.recover_seconds + plan.settle_seconds
    duration = plan.steady_seconds + len(CONSUMERS) * per_outage + plan.settle_seconds
    stop_load, load_started = asyncio.Event(), asyncio.Event()
    config = runner.config_for(rate, duration)
    load = asyncio.create_task(run_load(config, stop=stop_load, started=load_started))
    await load_started.wait()
    started = time.time()
    outages: list[Outage] = []
    memory.start()
    await asyncio.sleep(plan.warmup_seconds)
    before = await statements.snapshot()
    cpu_before, cpu_from = await asyncio.to_thread(cpu_seconds, pids), time.monotonic()
    await asyncio.sleep(plan.steady_seconds - plan.warmup_seconds)
    after = await statements.snapshot()
    cpu_after, cpu_to = await asyncio.to_thread(cpu_seconds, pids), time.monotonic()
    steady_end = time.time()
    await memory.stop()
    # Accepted votes flow into votes.accepted at their own rate, below the offered one.
    rates = {
        topic: watch.topic_rate(topic, started + plan.warmup_seconds, steady_end)
        for topic in set(GROUP_TOPIC.values())
    }
    for consumer in CONSUMERS:
        if load.done():
            break
        stopped_at = time.time()
        await asyncio.to_thread(services.stop, consumer)
        await asyncio.sleep(plan.stop_seconds)
        restarted_at = time.time()
        await asyncio.to_thread(services.start, consumer)
        ready_at = time.time()
        topic_rate = rates[GROUP_TOPIC[consumer]] or rate
        backlog, caught = await _await_caught_up(watch, consumer, topic_rate, plan.recover_seconds)
        outages.append(Outage(consumer, stopped_at, restarted_at, ready_at, backlog, caught))
        log.info("pipeline: %s back after the stop: %s", consumer, outages[-1].to_dict())
        await asyncio.sleep(plan.settle_seconds)
    stop_load.set()
    report: LoadReport = await load
    ended = time.time()
    await watch.drained(within=120)
    votes = await vote_times(env.database_url, started - 1, ended + 1)
    steady = [v for v in votes if started + plan.warmup_seconds <= v.received < steady_end]
    steady_latency = sorted(
        v.latency * 1000
        for v in report.sent
        if v.status == 202 and plan.warmup_seconds <= v.intended < steady_end - started
    )
    started = report.started_at.timestamp()
    return {
        "rate": rate,
        "started": started,
        "steady_end": steady_end,
        "ended": ended,
        "load": report.summary(),
        "ingest_ms": {
            "p50": percentile(steady_latency, 50),
            "p99": percentile(steady_latency, 99),
            "p999": percentile(steady_latency, 99.9),
        },
        "delays": delays(steady),
        "worst_wait": worst_waits(steady),
        "statements": statements_per_vote(before, after, len([v for v in steady])),
        "memory": memory.peak,
        "cpu": cpu_per_vote(cpu_before, cpu_after, cpu_to - cpu_from, len(steady)),
        "outages": [o.to_dict() for o in outages],
        "topic_rates": rates,
        "acknowledged": sum(1 for v in report.sent if v.status == 202),
        "undecided": await undecided(env.database_url, report),
        "counts": await counts_agree(env.database_url),
        "timeline": timeline(report, votes, watch.samples, started, ended),
    }


def timeline(
    report: LoadReport,
    votes: Sequence[VoteTimes],
    samples: Sequence[LagSample],
    started: float,
    ended: float,
) -> dict[str, Any]:
    """Per-second series for the plot, in seconds from the start of the run."""
    seconds = math.ceil(ended - started) + 1
    answered = [0] * seconds
    for sent in report.sent:
        if sent.status == 202 and not math.isnan(sent.latency):
            at = int(sent.intended + sent.latency)
            if 0 <= at < seconds:
                answered[at] += 1
    decided = [0] * seconds
    counted = [0] * seconds
    decision_by_second: dict[int, list[float]] = defaultdict(list)
    count_by_second: dict[int, list[float]] = defaultdict(list)
    for vote in votes:
        at = int(vote.decided - started)
        if 0 <= at < seconds:
            decided[at] += 1
        received = int(vote.received - started)
        decision_by_second[received].append(vote.decided - vote.received)
        if vote.counted is not None:
            at = int(vote.counted - started)
            if 0 <= at < seconds:
                counted[at] += 1
            count_by_second[received].append(vote.counted - vote.received)

    def p(series: dict[int, list[float]], point: float) -> list[float]:
        return [percentile(sorted(series.get(s, [])), point) for s in range(seconds)]

    return {
        "seconds": seconds,
        "answered": answered,
        "decided": decided,
        "counted": counted,
        "decision_p50": p(decision_by_second, 50),
        "decision_p99": p(decision_by_second, 99),
        "count_p50": p(count_by_second, 50),
        "count_p99": p(count_by_second, 99),
        "lag": [{"t": s.at - started, **s.lag} for s in samples if started <= s.at <= ended + 1],
    }


# --------------------------------------------------------------------------- the part


@dataclass
class PipelineResult:
    ingest_max: float | None
    ingest_measured_here: bool
    bare_endpoint: float | None
    search: list[dict[str, Any]] = field(default_factory=list)
    holds: list[dict[str, Any]] = field(default_factory=list)
    sustained: float | None = None
    # 70% of this: the sustained rate, or the highest step of the search when no rate
    # held for the whole duration (the report says which).
    seventy_of: float | None = None
    seventy: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        ratio = self.sustained / self.ingest_max if self.sustained and self.ingest_max else None
        return {**asdict(self), "ratio": ratio}


async def run_pipeline(
    env: BenchEnv,
    plan: PipelinePlan,
    mix: Mix,
    ingest: dict[str, Any] | None,
    search_plan: SearchPlan,
) -> PipelineResult:
    """The sustained rate, the run at 70% with its outages, and the Kafka baselines."""
    bare = ingest["bare"]["max_rate"] if ingest else None
    ingest_max = ingest["ingest"]["max_rate"] if ingest else None
    measured_here = False
    if ingest_max is None:
        log.info("pipeline: the ingest-only maximum first (no ingest part in this run)")
        process = await asyncio.to_thread(start_ingest, env)
        try:
            alone = await search_max_rate(
                process, vote_config(env, process.url, mix), StepRule(), search_plan
            )
        finally:
            await asyncio.to_thread(process.stop)
        ingest_max, measured_here = alone.max_rate, True
    result = PipelineResult(ingest_max, measured_here, bare, plan=asdict(plan))
    if not ingest_max:
        log.warning("pipeline: no ingest-only maximum; nothing to compare with")
        return result
    await skip_to_end(env.kafka_bootstrap)
    services = Services(env)
    watch = LagWatch(env.kafka_bootstrap)
    try:
        for name in SERVICES:
            await asyncio.to_thread(services.start, name)
        await watch.start()
        runner = Runner(env, plan, mix, services, watch)
        steps, found = await runner.search(ingest_max)
        result.search = [s.to_dict() for s in steps]
        if found is not None:
            holds, sustained = await runner.hold(found)
            result.holds = [s.to_dict() for s in holds]
            result.sustained = sustained
        result.seventy_of = result.sustained or found
        if result.seventy_of:
            log.info(
                "pipeline: at 70%% of %.0f/s, with each consumer stopped in turn", result.seventy_of
            )
            result.seventy = await at_seventy(env, plan, runner, services, 0.7 * result.seventy_of)
    finally:
        await watch.stop()
        await asyncio.to_thread(services.stop_all)
    log.info("pipeline: baselines (bare producer and consumer, ProducerPerformance)")
    result.baselines = await baselines(env, plan.baseline_records, mix)
    return result


if __name__ == "__main__":  # pragma: no cover - run through bench.run
    sys.exit("run `python -m bench.run --parts pipeline`")
