"""Antifraud's tables: decisions, the daily-limit counters, spent captchas and the
submissions inside the rate-limit windows.

A batch is decided in one transaction. The state the rules need (for just the keys the
batch touches) is loaded under transaction-level advisory locks covering those keys
(see :func:`lock_keys`), taken in a fixed order: two antifraud replicas judging the same
voter, address, subnet or captcha wait for each other, so together they never exceed a
limit, and never deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg
import asyncpg.pool

from services.antifraud.rules import (
    Batch,
    Decision,
    DecisionState,
    StateDelta,
    StateKeys,
    decide_batch,
    keys_for,
)
from shared.catalog import Catalog
from shared.events import RejectReason, VoteSubmitted

log = logging.getLogger(__name__)

SCHEMA = "antifraud"
DECISION_COLUMNS = (
    "vote_id",
    "poll_id",
    "voter_id",
    "choice",
    "verdict",
    "reason",
    "day",
    "received_at",
    "decided_at",
)
# A vote judged by two replicas at once (only while a rebalance hands its partition
# over) makes the second one's COPY fail on the decision's key; starting over reads the
# first one's decision instead.
ATTEMPTS = 3
RATE_EVENT_RETENTION = timedelta(days=2)

# Transaction-level advisory locks and COPY only, no session SET (the prune's SET LOCAL
# ends with its transaction) or LISTEN: nothing outlives a use, so released connections
# skip asyncpg's reset statements.
POOL_RESETS_SESSION = False

# Every read of a batch looks up its keys (vote ids, voters, captchas, windows) in a
# unique or leading index, so an index nested loop is always the right plan. Without
# column statistics - a fresh schema, and between autoanalyze runs while the tables grow
# tenfold at a campaign's start - the planner guessed each key matched 1/200 of a table
# and merge-joined the window read over the whole index instead: from 20 to 190 ms a
# 1,000-vote batch as rate_events grew to 350,000 rows, until the first autovacuum. With
# nothing else on offer, plans stay right whatever the statistics say, so they can also
# be cached (planning each execution cost about a quarter of Postgres' time here). The
# prune, the one scan, allows sequential scans for itself.
PLANNER = {
    "enable_mergejoin": "off",
    "enable_hashjoin": "off",
    "enable_seqscan": "off",
    "plan_cache_mode": "auto",
}


Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True)
class StoredDecision:
    poll_id: str
    verdict: str
    reason: str | None
    day: date | None
    received_at: datetime


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    decided_at: datetime
    fresh: bool  # False when the vote had been decided before (a replay)


# One row per window that has events, its times already sorted: far fewer rows (and
# values) to decode than one per event when a flood fills some window.
WINDOW_READ = (
    "SELECT k.i, array_agg(e.received_at ORDER BY e.received_at) FROM unnest($1::text[],"
    " $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) WITH ORDINALITY"
    "   AS k(poll_id, scope, key, since, until, i)"
    " JOIN rate_events e USING (poll_id, scope, key)"
    " WHERE e.received_at > k.since AND e.received_at <= k.until"
    " GROUP BY k.i"
)


def lock_keys(keys: StateKeys) -> list[str]:
    """The advisory locks a batch takes: a voter's window, an address's subnet window and
    each captcha.

    Fewer names than rows read, with the same effect: every vote that counts towards a
    voter's daily limit is also in that voter's window, and every vote in an address's
    window is in its subnet's, so whoever may touch those rows holds these locks too.
    """
    names = {f"captcha:{c}" for c in keys.captchas}
    names.update(
        f"rate:{p}:{scope}:{k}" for p, scope, k in keys.windows if scope in ("voter", "subnet")
    )
    return sorted(names)


def _decision_of(s: VoteSubmitted, row: asyncpg.Record) -> Decision:
    reason = RejectReason(row["reason"]) if row["reason"] else None
    return Decision(
        vote_id=s.vote_id,
        poll_id=row["poll_id"],
        voter_id=row["voter_id"],
        choice=row["choice"],
        verdict=row["verdict"],
        reason=reason,
        day=row["day"],
        received_at=row["received_at"],
    )


async def _load_state(conn: Conn, keys: StateKeys) -> DecisionState:
    days = list(keys.days)
    day_rows = await conn.fetch(
        "SELECT d.poll_id, d.voter_id, d.day, d.n FROM daily_accepted d"
        " JOIN unnest($1::text[], $2::text[], $3::date[]) AS k(poll_id, voter_id, day)"
        " USING (poll_id, voter_id, day)",
        [k[0] for k in days],
        [k[1] for k in days],
        [k[2] for k in days],
    )
    used = await conn.fetch(
        "SELECT fingerprint FROM used_captchas WHERE fingerprint = ANY($1::text[])",
        list(keys.captchas),
    )
    windows = list(keys.windows.items())
    event_rows = await conn.fetch(
        WINDOW_READ,
        [k[0] for k, _ in windows],
        [k[1] for k, _ in windows],
        [k[2] for k, _ in windows],
        [span[0] for _, span in windows],
        [span[1] for _, span in windows],
    )
    return DecisionState(
        accepted_per_day={(poll_id, voter, day): n for poll_id, voter, day, n in day_rows},
        used_captchas={fingerprint for (fingerprint,) in used},
        recent={windows[i - 1][0]: times for i, times in event_rows},
    )


async def _save(
    conn: Conn,
    fresh: Batch,
    decisions: Sequence[Decision],
    delta: StateDelta,
    decided_at: datetime,
) -> None:
    if not decisions:
        return
    # COPY, not INSERT: these rows are new by construction (read under the locks just
    # now), and COPY skips the per-element array encoding an INSERT of arrays pays. A
    # duplicate would abort the transaction, and decide_and_record starts over.
    await conn.copy_records_to_table(
        "decisions",
        columns=DECISION_COLUMNS,
        records=[
            (
                d.vote_id,
                d.poll_id,
                d.voter_id,
                d.choice,
                d.verdict,
                d.reason.value if d.reason else None,
                d.day,
                d.received_at,
                decided_at,
            )
            for d in decisions
        ],
    )
    await _save_days(conn, delta)
    await _save_captchas(conn, fresh, delta)
    await _save_windows(conn, delta)


async def _save_days(conn: Conn, delta: StateDelta) -> None:
    keys = sorted(k for k, n in delta.accepted.items() if n)
    if not keys:
        return
    await conn.execute(
        "INSERT INTO daily_accepted AS d (poll_id, voter_id, day, n)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::int[])"
        " ON CONFLICT (poll_id, voter_id, day) DO UPDATE SET n = d.n + EXCLUDED.n",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [delta.accepted[k] for k in keys],
    )


async def _save_captchas(conn: Conn, fresh: Batch, delta: StateDelta) -> None:
    if not delta.used_captchas:
        return
    first: dict[str, VoteSubmitted] = {}
    for s, facts in zip(fresh.votes, fresh.facts, strict=True):
        first.setdefault(facts.fingerprint, s)
    await conn.copy_records_to_table(
        "used_captchas",
        columns=("fingerprint", "vote_id", "received_at"),
        records=[
            (f, first[f].vote_id, first[f].received_at) for f in delta.used_captchas if f in first
        ],
    )


async def _save_windows(conn: Conn, delta: StateDelta) -> None:
    """Persist the submissions the rules counted in a window, each under its vote id."""
    if delta.events:
        await conn.copy_records_to_table(
            "rate_events",
            columns=("poll_id", "scope", "key", "received_at", "vote_id"),
            records=[(*key, instant, vote_id) for key, instant, vote_id in delta.events],
        )


async def decide_and_record(
    pool: asyncpg.Pool,
    submissions: Sequence[VoteSubmitted],
    catalog: Catalog,
    captcha_secret: str,
    decided_at: datetime,
) -> list[Outcome]:
    """Decide the batch's new votes and return every vote's decision (old ones unchanged)."""
    unique = list({s.vote_id: s for s in reversed(submissions)}.values())[::-1]
    batch = Batch.of(unique, catalog)
    keys = keys_for(batch, catalog)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            known, decisions = await _decide_in_transaction(
                pool, unique, batch, keys, catalog, captcha_secret, decided_at
            )
            break
        except asyncpg.UniqueViolationError:
            if attempt == ATTEMPTS:
                raise
            log.info("a vote of the batch was decided elsewhere meanwhile; deciding again")
    by_id = {d.vote_id: d for d in decisions}
    outcomes = []
    for s in unique:
        if s.vote_id in known:
            row = known[s.vote_id]
            outcomes.append(Outcome(_decision_of(s, row), row["decided_at"], fresh=False))
        else:
            outcomes.append(Outcome(by_id[s.vote_id], decided_at, fresh=True))
    return outcomes


async def _decide_in_transaction(
    pool: asyncpg.Pool,
    unique: Sequence[VoteSubmitted],
    batch: Batch,
    keys: StateKeys,
    catalog: Catalog,
    captcha_secret: str,
    decided_at: datetime,
) -> tuple[dict[str, asyncpg.Record], list[Decision]]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM"
            " (SELECT DISTINCT hashtextextended(x, 0) AS k FROM unnest($1::text[]) x ORDER BY 1) s",
            lock_keys(keys),
        )
        # Read under the locks: a replica that decided one of these votes a moment ago
        # held the same voter lock, so its decision is visible here and is not redone.
        known = {
            r["vote_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM decisions WHERE vote_id = ANY($1::text[])",
                [s.vote_id for s in unique],
            )
        }
        fresh = batch.only({s.vote_id for s in unique} - known.keys()) if known else batch
        state = await _load_state(conn, keys_for(fresh, catalog) if known else keys)
        decisions = decide_batch(fresh, catalog, captcha_secret, state)
        await _save(conn, fresh, decisions, state.take_delta(), decided_at)
    return known, decisions


async def find_decision(pool: asyncpg.Pool, vote_id: str) -> StoredDecision | None:
    row = await pool.fetchrow(
        "SELECT poll_id, verdict, reason, day, received_at FROM decisions WHERE vote_id = $1",
        vote_id,
    )
    if row is None:
        return None
    return StoredDecision(
        row["poll_id"], row["verdict"], row["reason"], row["day"], row["received_at"]
    )


async def prune_forever(pool: asyncpg.Pool, clock: Callable[[], datetime]) -> None:
    """Drop window rows older than any window can reach; they only cost space."""
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = on")
                await conn.execute(
                    "DELETE FROM rate_events WHERE received_at < $1",
                    clock() - RATE_EVENT_RETENTION,
                )
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("pruning rate events failed: %s", exc)
        await asyncio.sleep(600)
