"""Antifraud's tables: decisions, the daily-limit counters, spent captchas and the
submissions inside the rate-limit windows.

A batch is decided in one transaction. The state the rules need (for just the keys the
batch touches) is loaded under transaction-level advisory locks on those keys, taken in
a fixed order: two antifraud replicas judging the same voter, address, subnet or captcha
wait for each other, so together they never exceed a limit, and never deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg
import asyncpg.pool

from services.antifraud.rules import (
    Decision,
    DecisionState,
    StateDelta,
    StateKeys,
    WindowKey,
    decide_batch,
    keys_for,
)
from shared.captcha import captcha_fingerprint
from shared.catalog import Catalog
from shared.events import RejectReason, VoteSubmitted

log = logging.getLogger(__name__)

SCHEMA = "antifraud"
RATE_EVENT_RETENTION = timedelta(days=2)


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


def lock_keys(keys: StateKeys) -> list[str]:
    names = {f"captcha:{c}" for c in keys.captchas}
    names.update(f"day:{p}:{v}:{d}" for p, v, d in keys.days)
    names.update(f"rate:{p}:{scope}:{k}" for p, scope, k in keys.windows)
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
    days = sorted(keys.days)
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
        sorted(keys.captchas),
    )
    windows = list(keys.windows.items())
    event_rows = await conn.fetch(
        "SELECT e.poll_id, e.scope, e.key, e.received_at FROM rate_events e"
        " JOIN unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])"
        "   AS k(poll_id, scope, key, since, until) USING (poll_id, scope, key)"
        " WHERE e.received_at > k.since AND e.received_at <= k.until",
        [k[0] for k, _ in windows],
        [k[1] for k, _ in windows],
        [k[2] for k, _ in windows],
        [span[0] for _, span in windows],
        [span[1] for _, span in windows],
    )
    recent: dict[WindowKey, list[datetime]] = defaultdict(list)
    for r in event_rows:
        recent[(r["poll_id"], r["scope"], r["key"])].append(r["received_at"])
    return DecisionState(
        accepted_per_day={(r["poll_id"], r["voter_id"], r["day"]): r["n"] for r in day_rows},
        used_captchas={r["fingerprint"] for r in used},
        recent={key: sorted(times) for key, times in recent.items()},
    )


async def _save(
    conn: Conn,
    fresh: Sequence[VoteSubmitted],
    decisions: Sequence[Decision],
    delta: StateDelta,
    decided_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO decisions (vote_id, poll_id, voter_id, choice, verdict, reason, day,"
        " received_at, decided_at)"
        " SELECT *, $9::timestamptz FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
        " $5::text[], $6::text[], $7::date[], $8::timestamptz[])"
        " ON CONFLICT (vote_id) DO NOTHING",
        [d.vote_id for d in decisions],
        [d.poll_id for d in decisions],
        [d.voter_id for d in decisions],
        [d.choice for d in decisions],
        [d.verdict for d in decisions],
        [d.reason.value if d.reason else None for d in decisions],
        [d.day for d in decisions],
        [d.received_at for d in decisions],
        decided_at,
    )
    await _save_days(conn, delta)
    await _save_captchas(conn, fresh, delta)
    await _save_windows(conn, fresh, delta)


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


async def _save_captchas(conn: Conn, fresh: Sequence[VoteSubmitted], delta: StateDelta) -> None:
    first: dict[str, VoteSubmitted] = {}
    for s in fresh:
        first.setdefault(captcha_fingerprint(s.captcha_id), s)
    spent = [first[f] for f in sorted(delta.used_captchas) if f in first]
    if spent:
        await conn.execute(
            "INSERT INTO used_captchas (fingerprint, vote_id, received_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
            " ON CONFLICT DO NOTHING",
            [captcha_fingerprint(s.captcha_id) for s in spent],
            [s.vote_id for s in spent],
            [s.received_at for s in spent],
        )


async def _save_windows(conn: Conn, fresh: Sequence[VoteSubmitted], delta: StateDelta) -> None:
    """Persist the submissions the rules counted in a window, each under its vote id."""
    owners: dict[datetime, list[VoteSubmitted]] = defaultdict(list)
    for s in fresh:
        owners[s.received_at].append(s)
    taken: Counter[tuple[WindowKey, datetime]] = Counter()
    rows: list[tuple[str, str, str, datetime, str]] = []
    for key, instant in delta.events:
        candidates = owners.get(instant, [])
        index = taken[(key, instant)]
        taken[(key, instant)] += 1
        if index < len(candidates):
            rows.append((*key, instant, candidates[index].vote_id))
    if rows:
        await conn.execute(
            "INSERT INTO rate_events (poll_id, scope, key, received_at, vote_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],"
            " $5::text[]) ON CONFLICT DO NOTHING",
            *[list(column) for column in zip(*rows, strict=True)],
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
    async with pool.acquire() as conn, conn.transaction():
        known = {
            r["vote_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM decisions WHERE vote_id = ANY($1::text[])",
                [s.vote_id for s in unique],
            )
        }
        fresh = [s for s in unique if s.vote_id not in known]
        keys = keys_for(fresh, catalog)
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM"
            " (SELECT DISTINCT hashtextextended(x, 0) AS k FROM unnest($1::text[]) x ORDER BY 1) s",
            lock_keys(keys),
        )
        state = await _load_state(conn, keys)
        decisions = decide_batch(fresh, catalog, captcha_secret, state)
        await _save(conn, fresh, decisions, state.take_delta(), decided_at)
    by_id = {d.vote_id: d for d in decisions}
    outcomes = []
    for s in unique:
        if s.vote_id in known:
            row = known[s.vote_id]
            outcomes.append(Outcome(_decision_of(s, row), row["decided_at"], fresh=False))
        else:
            outcomes.append(Outcome(by_id[s.vote_id], decided_at, fresh=True))
    return outcomes


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
            await pool.execute(
                "DELETE FROM rate_events WHERE received_at < $1", clock() - RATE_EVENT_RETENTION
            )
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("pruning rate events failed: %s", exc)
        await asyncio.sleep(600)
