"""The whole pipeline under load: ingest, antifraud, tally and lottery on one machine.

1. **Sustained rate.** Steps of a constant arrival rate through vote_ingest, from a
   fraction of the ingest-only maximum upwards. A step holds when the load generator's
   rule holds (few errors, p99 within bounds, answers keep pace) *and* no consumer fell
   more than 2 s behind: for every vote received in the step (after a short warm-up),
   the time it waited for each consumer stays under 2 s - antifraud from ``received_at``
   to its decision, tally and lottery from the decision to their commit. The highest
   step that held is then held for the full duration (5 minutes), lowered by 10% if it
   does not.
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
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench import catchup
from bench.env import BENCH_POLL, BenchEnv, Process, free_port, launch, process_tree_memory
from bench.ingest import ConfigFor, SearchPlan, StepRule, search_max_rate, start_ingest, vote_config
from bench.loadgen import LoadReport, Mix, run_load
from shared.events import TOPIC_ACCEPTED, TOPIC_SUBMITTED

log = logging.getLogger("bench")

LAG_LIMIT = 2.0  # seconds a vote may wait for any one consumer
CONSUMERS = ("antifraud", "tally", "lottery")
GROUP_TOPIC = {"antifraud": TOPIC_SUBMITTED, "tally": TOPIC_ACCEPTED, "lottery": TOPIC_ACCEPTED}
SERVICES = ("vote_ingest", *CONSUMERS)
# Which service a statement belongs to, by the tables it names.
STATEMENT_OWNERS = (
    ("antifraud", ("decisions", "daily_accepted", "used_captchas", "rate_events")),
    ("tally", ("counted_votes", "counts", "recount")),
    ("lottery", ("voter_days", "entries", "entry_voters", "commitments", "draws")),
)


@dataclass(frozen=True)
class PipelinePlan:
    start_fraction: float = 0.4  # first step, of the ingest-only maximum
    growth: float = 1.2  # each further step
    step_seconds: float = 20.0
    refine_steps: int = 1
    hold_seconds: float = 300.0
    hold_attempts: int = 3
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
    warmup_seconds=2.0,
    steady_seconds=12.0,
    stop_seconds=10.0,
    recover_seconds=40.0,
    settle_seconds=3.0,
    baseline_records=50_000,
)


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], point: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(point / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: Iterable[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "p999": percentile(ordered, 99.9),
        "max": ordered[-1] if ordered else math.nan,
    }


@dataclass
class VoteTimes:
    """One decided vote's instants (epoch seconds) in each service's table."""

    received: float
    decided: float
    accepted: bool
    counted: float | None
    recorded: float | None

    def waits(self) -> dict[str, float]:
        """How long the vote waited for each consumer."""
        out = {"antifraud": self.decided - self.received}
        if self.counted is not None:
            out["tally"] = self.counted - self.decided
        if self.recorded is not None:
            out["lottery"] = self.recorded - self.decided
        return out


def worst_waits(votes: Iterable[VoteTimes]) -> dict[str, float]:
    worst = dict.fromkeys(CONSUMERS, 0.0)
    for vote in votes:
        for name, wait in vote.waits().items():
            worst[name] = max(worst[name], wait)
    return worst


def delays(votes: Sequence[VoteTimes]) -> dict[str, dict[str, float]]:
    return {
        "decision": summarize(v.decided - v.received for v in votes),
        "count": summarize(v.counted - v.received for v in votes if v.counted is not None),
    }


# --------------------------------------------------------------------------- the services


class Services:
    """The pipeline's four services, launched by the bench like the ingest benchmark's."""

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.running: dict[str, Process] = {}

    def start(self, name: str) -> Process:
        if name == "vote_ingest":
            process = start_ingest(self.env)
        else:
            port = free_port()
            service_env = {**self.env.service_env, f"{name.upper()}_PORT": str(port)}
            process = launch(name, [f"services.{name}.main"], service_env, port, self.env.log_dir)
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
    for group, topic in GROUP_TOPIC.items():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await catchup.create_topics(bootstrap, topic)
            await consumer._client.force_metadata_update()
            ids = consumer.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in sorted(ids)]
            ends = await consumer.end_offsets(partitions)
            consumer.assign(partitions)
            await consumer.commit({tp: ends[tp] for tp in partitions})
        finally:
            await consumer.stop()


@dataclass
class LagSample:
    at: float  # epoch seconds
    lag: dict[str, int]  # consumer -> records not yet committed
    ends: dict[str, int]  # topic -> end offset summed over partitions


class LagWatch:
    """Each consumer group's lag in records, read from the broker once a second."""

    def __init__(self, bootstrap: str, interval: float = 1.0) -> None:
        self.bootstrap = bootstrap
        self.interval = interval
        self.samples: list[LagSample] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self._offsets = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await self._admin.start()
        await self._offsets.start()
        self._partitions = {}
        for topic in set(GROUP_TOPIC.values()):
            await self._offsets._client.force_metadata_update()
            ids = self._offsets.partitions_for_topic(topic) or set()
            self._partitions[topic] = [TopicPartition(topic, p) for p in sorted(ids)]
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._offsets.stop()
        await self._admin.close()

    async def sample(self) -> LagSample:
        ends: dict[TopicPartition, int] = {}
        for partitions in self._partitions.values():
            ends.update(await self._offsets.end_offsets(partitions))
        lag: dict[str, int] = {}
        for group, topic in GROUP_TOPIC.items():
            partitions = self._partitions[topic]
            done = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
            lag[group] = sum(
                max(0, ends[tp] - max(0, done[tp].offset if tp in done else 0)) for tp in partitions
            )
        by_topic = {t: sum(ends[tp] for tp in ps) for t, ps in self._partitions.items()}
        return LagSample(time.time(), lag, by_topic)

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append(await self.sample())
            except Exception as exc:  # a broker hiccup must not end the watch
                log.warning("lag sample failed: %s", exc)
            await asyncio.sleep(self.interval)

    async def drained(self, within: float) -> bool:
        """Wait until no group has anything left to read; False if it took too long."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not any((await self.sample()).lag.values()):
                return True
            await asyncio.sleep(0.5)
        return False

    def topic_rate(self, topic: str, since: float, until: float) -> float:
        """Records appended to ``topic`` per second between two instants."""
        inside = [s for s in self.samples if since <= s.at <= until]
        if len(inside) < 2 or inside[-1].at <= inside[0].at:
            return 0.0
        return (inside[-1].ends[topic] - inside[0].ends[topic]) / (inside[-1].at - inside[0].at)


async def vote_times(dsn: str, since: float, until: float) -> list[VoteTimes]:
    """Every bench vote received in [since, until) that antifraud decided."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT extract(epoch FROM d.received_at)::float8 AS received,
                   extract(epoch FROM d.decided_at)::float8 AS decided,
                   d.verdict = 'accepted' AS accepted,
                   extract(epoch FROM c.counted_at)::float8 AS counted,
                   extract(epoch FROM l.recorded_at)::float8 AS recorded
            FROM antifraud.decisions d
            LEFT JOIN tally.counted_votes c ON c.vote_id = d.vote_id
            LEFT JOIN lottery.voter_days l ON l.vote_id = d.vote_id
            WHERE d.poll_id = $1 AND d.received_at >= to_timestamp($2)
              AND d.received_at < to_timestamp($3)
            """,
            BENCH_POLL,
            since,
            until,
        )
    finally:
        await conn.close()
    return [
        VoteTimes(r["received"], r["decided"], r["accepted"], r["counted"], r["recorded"])
        for r in rows
    ]


async def undecided(dsn: str, report: LoadReport) -> int:
    """Votes answered 202 that antifraud has no decision for."""
    ids = [v.vote_id for v in report.sent if v.status == 202 and v.vote_id]
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM antifraud.decisions WHERE vote_id = ANY($1::text[])", ids
        )
    finally:
        await conn.close()
    return len(ids) - int(found)


# --------------------------------------------------------------------------- statements


class Statements:
    """Statements the services sent, from pg_stat_statements (exact calls per query)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.available = False

    async def enable(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.fetchval("SELECT count(*) FROM pg_stat_statements")
            self.available = True
        except asyncpg.PostgresError as exc:
            log.warning("pg_stat_statements is not available (%s); no statement counts", exc)
        finally:
            await conn.close()

    async def snapshot(self) -> dict[str, int]:
        if not self.available:
            return {}
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT query, calls FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await conn.close()
        out: dict[str, int] = defaultdict(int)
        for row in rows:
            if "pg_stat_statements" not in row["query"]:
                out[" ".join(row["query"].split())] += int(row["calls"])
        return out


# asyncpg's reset of a connection returned to its pool (one round trip, four statements).
POOL_RESET = ("UNLISTEN *", "CLOSE ALL", "SELECT pg_advisory_unlock_all()", "RESET ALL")


def statement_owner(query: str) -> str:
    if query in POOL_RESET:
        return "connection resets on release"
    words = set(re.findall(r"[a-z_]+", query.lower()))
    for owner, tables in STATEMENT_OWNERS:
        if words.intersection(tables):
            return owner
    return "other"


def statements_per_vote(
    before: dict[str, int], after: dict[str, int], votes: int
) -> dict[str, Any]:
    calls = {q: n - before.get(q, 0) for q, n in after.items() if n > before.get(q, 0)}
    by_owner: dict[str, int] = defaultdict(int)
    for query, n in calls.items():
        by_owner[statement_owner(query)] += n
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda item: -item[1])[:8]
    return {
        "votes": votes,
        "statements": total,
        "per_vote": total / votes if votes else None,
        "by_service": {
            k: {"statements": n, "per_vote": n / votes if votes else None}
            for k, n in sorted(by_owner.items())
        },
        "top": [[q[:70], n] for q, n in top],
    }


# --------------------------------------------------------------------------- memory


class MemoryWatch:
    """Resident memory of every process, sampled every 2 s; the peak is kept."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                rss, pss = await asyncio.to_thread(process_tree_memory, pid)
                seen = self.peak.setdefault(name, {"rss_mib": 0.0, "pss_mib": 0.0})
                seen["rss_mib"] = max(seen["rss_mib"], rss)
                seen["pss_mib"] = max(seen["pss_mib"], pss)
            await asyncio.sleep(2.0)


def infrastructure_pids(env: BenchEnv) -> dict[str, int]:
    """Kafka's and Postgres' pids when the bench runs under its own stack."""
    from scripts.stack import StackError, control_request

    try:
        status = control_request(env.run_dir, {"op": "status"})
    except (OSError, StackError):
        return {}
    return {
        name: int(status[name]["pid"])
        for name in ("kafka", "postgres")
        if name in status and status[name]["pid"]
    }


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
        steps: list[PipelineStep] = []
        rate = ingest_max * self.plan.start_fraction
        good: float | None = None
        bad: float | None = None
        while rate <= ingest_max * 1.001:
            step = await self.step(rate, self.plan.step_seconds)
            steps.append(step)
            if not step.held:
                bad = rate
                break
            good = rate
            if rate >= ingest_max:
                break
            rate = min(ingest_max, rate * self.plan.growth)
        for _ in range(self.plan.refine_steps):
            if good is None or bad is None:
                break
            middle = (good + bad) / 2
            step = await self.step(middle, self.plan.step_seconds)
            steps.append(step)
            good, bad = (middle, bad) if step.held else (good, middle)
        return steps, good

    async def hold(self, rate: float) -> tuple[list[PipelineStep], float | None]:
        holds: list[PipelineStep] = []
        for _ in range(self.plan.hold_attempts):
            log.info("pipeline: holding %.0f/s for %.0f s", rate, self.plan.hold_seconds)
            step = await self.step(rate, self.plan.hold_seconds)
            holds.append(step)
            if step.held:
                return holds, rate
            rate *= 0.9
        return holds, None


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
    memory = MemoryWatch({**pids, **infrastructure_pids(env)})
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
    await asyncio.sleep(plan.steady_seconds - plan.warmup_seconds)
    after = await statements.snapshot()
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
        "outages": [o.to_dict() for o in outages],
        "topic_rates": rates,
        "acknowledged": sum(1 for v in report.sent if v.status == 202),
        "undecided": await undecided(env.database_url, report),
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


# --------------------------------------------------------------------------- baselines


PERF_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th"
)


def parse_producer_performance(output: str) -> dict[str, float] | None:
    """The final summary line of Kafka's ProducerPerformance tool."""
    matches = list(PERF_LINE.finditer(output))
    if not matches:
        return None
    return {k: float(v) for k, v in matches[-1].groupdict().items()}


def producer_performance(
    bootstrap: str, topic: str, payloads: Path, records: int, run_dir: Path
) -> dict[str, Any]:
    """Kafka's own producer benchmark (kafka-tools) on the same broker and records."""
    from scripts.stack import StackError, kafka_libs

    java = shutil.which("java")
    if java is None:
        return {"skipped": "no java on PATH"}
    try:
        libs = kafka_libs(lambda note: log.info("pipeline: %s", note))
    except StackError as exc:
        return {"skipped": str(exc)}
    command = [
        java,
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--payload-file",
        str(payloads),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=600, cwd=run_dir
    )
    parsed = parse_producer_performance(result.stdout)
    if result.returncode != 0 or parsed is None:
        tail = (result.stdout + result.stderr)[-1500:]
        return {"skipped": f"ProducerPerformance failed (exit {result.returncode}): {tail}"}
    return {"rate": parsed["rate"], "summary": parsed, "acks": "all"}


async def baselines(env: BenchEnv, n: int, mix: Mix) -> dict[str, Any]:
    records = catchup.submitted_backlog(n, env.captcha_secret, mix)
    size = sum(len(value) for _, value in records) / len(records)
    produced = catchup.unique("bench_pipe_producer")
    perf_topic = catchup.unique("bench_pipe_perf")
    await catchup.create_topics(env.kafka_bootstrap, produced, perf_topic)
    producer_rate = await catchup.produce(env.kafka_bootstrap, produced, records)
    consumer = await catchup.bare_consume(env.kafka_bootstrap, produced, n)
    payloads = env.run_dir / "bench-payloads.txt"
    payloads.write_bytes(b"\n".join(value for _, value in records))
    perf = await asyncio.to_thread(
        producer_performance, env.kafka_bootstrap, perf_topic, payloads, n, env.run_dir
    )
    return {
        "records": n,
        "record_bytes": round(size),
        "aiokafka_producer": producer_rate,
        "aiokafka_consumer": consumer.rate,
        "producer_performance": perf,
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
        if result.sustained:
            log.info(
                "pipeline: at 70%% of %.0f/s, with each consumer stopped in turn", result.sustained
            )
            result.seventy = await at_seventy(env, plan, runner, services, 0.7 * result.sustained)
    finally:
        await watch.stop()
        await asyncio.to_thread(services.stop_all)
    log.info("pipeline: baselines (bare producer and consumer, ProducerPerformance)")
    result.baselines = await baselines(env, plan.baseline_records, mix)
    return result


if __name__ == "__main__":  # pragma: no cover - run through bench.run
    sys.exit("run `python -m bench.run --parts pipeline`")
