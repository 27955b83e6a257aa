"""What the whole-pipeline benchmark reads while it runs, and the arithmetic on it.

Per-vote instants from the services' own tables, each consumer group's lag from the
broker, statement counts from pg_stat_statements and memory from ``/proc``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.env import BENCH_POLL, BenchEnv, process_tree_cpu, process_tree_memory
from bench.loadgen import LoadReport
from shared.drain import PipelineProbe
from shared.events import TOPIC_ACCEPTED, TOPIC_SUBMITTED

log = logging.getLogger("bench")

CONSUMERS = ("antifraud", "tally", "lottery")
GROUP_TOPIC = {"antifraud": TOPIC_SUBMITTED, "tally": TOPIC_ACCEPTED, "lottery": TOPIC_ACCEPTED}
# Which service a statement belongs to, by the tables it names.
STATEMENT_OWNERS = (
    ("antifraud", ("decisions", "daily_accepted", "used_captchas", "rate_events")),
    ("tally", ("counted_votes", "counts", "recount")),
    ("lottery", ("voter_days", "entries", "entry_voters", "commitments", "draws")),
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
        self._probe = PipelineProbe({"bootstrap_servers": self.bootstrap})
        await self._probe.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._probe.stop()

    async def sample(self) -> LagSample:
        topics = sorted(set(GROUP_TOPIC.values()))
        ends = {topic: sum((await self._probe.ends(topic)).values()) for topic in topics}
        lag = {
            group: sum((await self._probe.lag(group, topic)).values())
            for group, topic in GROUP_TOPIC.items()
        }
        return LagSample(time.time(), lag, ends)

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


async def counts_agree(dsn: str) -> dict[str, int]:
    """The bench poll's accepted decisions against tally's rows and totals and lottery's
    days: after a drain, all four are equal or a vote was lost or counted twice."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM antifraud.decisions"
            "        WHERE poll_id = $1 AND verdict = 'accepted') AS accepted,"
            " (SELECT count(*) FROM tally.counted_votes WHERE poll_id = $1) AS counted_rows,"
            " (SELECT coalesce(sum(n), 0) FROM tally.counts WHERE poll_id = $1) AS totals,"
            " (SELECT count(*) FROM lottery.voter_days WHERE poll_id = $1) AS days_voted",
            BENCH_POLL,
        )
    finally:
        await conn.close()
    return {key: int(value) for key, value in (row or {}).items()}


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
    if query in ("BEGIN", "COMMIT", "ROLLBACK"):
        return "transaction control (BEGIN, COMMIT)"
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


BENCH_PROCESS = "bench (load generator, watchers)"


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each process with its children, and by the bench
    process itself (its own threads only: its children are the services)."""
    used = {name: process_tree_cpu(pid) for name, pid in pids.items()}
    used[BENCH_PROCESS] = time.process_time()
    return used


def cpu_per_vote(
    before: Mapping[str, float], after: Mapping[str, float], seconds: float, votes: int
) -> dict[str, dict[str, float | None]]:
    """What each process spent between two cpu_seconds() readings: per vote, and as
    cores kept busy. On a machine the processes share, this is where a vote's cost goes."""
    use: dict[str, dict[str, float | None]] = {}
    for name, now in after.items():
        spent = max(0.0, now - before.get(name, now))
        use[name] = {
            "cpu_s": spent,
            "ms_per_vote": 1000 * spent / votes if votes else None,
            "cores": spent / seconds if seconds > 0 else None,
        }
    return use


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
