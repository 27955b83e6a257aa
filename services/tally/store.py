"""Tally's tables: counted vote ids and the per-(poll, option) totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, Protocol, TypeVar

import asyncpg

SCHEMA = "tally"

# Tally's pooled connections hold no session state (no SET, no session locks, no
# temporary tables), so the pool skips asyncpg's reset statement: half the statements a
# small batch costs. An open transaction is still rolled back.
POOL_RESETS_SESSION = False

# From this many votes a batch is copied in (binary COPY, four round trips) rather than
# sent as one statement: COPY costs Postgres about half the CPU per row of an
# INSERT ... ON CONFLICT (multi-row heap inserts, no speculative insertion) and asyncpg
# less than encoding arrays. Below it, the three extra round trips cost more than they save.
COPY_FROM = 500

_COUNTED_COLUMNS = ("vote_id", "poll_id", "choice")
_counted_row = attrgetter(*_COUNTED_COLUMNS)
_poll_and_choice = attrgetter("poll_id", "choice")

# The whole batch in one statement: record the batch's vote ids (duplicates, from a
# replay or a redelivery, are skipped by the primary key), then add the new votes' sums
# to the totals. Rows are upserted in key order so two tally replicas never deadlock on
# the totals. It answers with the batch positions (1-based) of the votes that were new.
_COUNT_BATCH = """
WITH batch AS (
    SELECT DISTINCT ON (vote_id) vote_id, poll_id, choice, i
    FROM unnest($1::text[], $2::text[], $3::text[])
         WITH ORDINALITY AS b(vote_id, poll_id, choice, i)
), fresh AS (
    INSERT INTO counted_votes (vote_id, poll_id, choice)
    SELECT vote_id, poll_id, choice FROM batch
    ON CONFLICT (vote_id) DO NOTHING
    RETURNING vote_id, poll_id, choice
), bump AS (
    INSERT INTO counts AS c (poll_id, choice, n, updated_at)
    SELECT poll_id, choice, count(*), now() FROM fresh
    GROUP BY poll_id, choice ORDER BY poll_id, choice
    ON CONFLICT (poll_id, choice) DO UPDATE SET n = c.n + EXCLUDED.n, updated_at = now()
)
SELECT coalesce(array_agg(batch.i), '{}') FROM fresh JOIN batch USING (vote_id)
"""

# The totals of votes known to be new (sorted by key, for the same lock order).
_ADD_SUMS = """
INSERT INTO counts AS c (poll_id, choice, n, updated_at)
SELECT poll_id, choice, n, now() FROM unnest($1::text[], $2::text[], $3::bigint[])
     AS s(poll_id, choice, n)
ON CONFLICT (poll_id, choice) DO UPDATE SET n = c.n + EXCLUDED.n, updated_at = now()
"""


class Countable(Protocol):
    """What counting needs of an accepted vote (the event model or its fast decoding)."""

    @property
    def vote_id(self) -> str: ...
    @property
    def poll_id(self) -> str: ...
    @property
    def choice(self) -> str: ...


V = TypeVar("V", bound=Countable)


@dataclass(frozen=True)
class Counted(Generic[V]):
    """The votes of a batch that were new, and how many of them each option got."""

    votes: list[V]
    totals: Counter[tuple[str, str]]


async def count_batch(pool: asyncpg.Pool, votes: Sequence[V]) -> Counted[V]:
    """Count the batch's votes that were not counted before; return those."""
    if len(votes) >= COPY_FROM:
        totals = Counter(map(_poll_and_choice, votes))
        if await _copy_if_all_new(pool, votes, totals):
            return Counted(list(votes), totals)
    fresh = await _count_skipping_known(pool, votes)
    return Counted(fresh, Counter(map(_poll_and_choice, fresh)))


async def _copy_if_all_new(
    pool: asyncpg.Pool, votes: Sequence[V], totals: Counter[tuple[str, str]]
) -> bool:
    """Copy the votes in and add their totals, in one transaction, if every vote id is
    new; False (and nothing written) when one is not: a replay, a redelivery, or one
    vote twice in the batch, which the statement that skips known ids then counts."""
    sums = sorted(totals.items())
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                "counted_votes", records=map(_counted_row, votes), columns=_COUNTED_COLUMNS
            )
            await conn.execute(
                _ADD_SUMS,
                [poll for (poll, _), _ in sums],
                [choice for (_, choice), _ in sums],
                [n for _, n in sums],
            )
    except asyncpg.UniqueViolationError:
        return False
    return True


async def _count_skipping_known(pool: asyncpg.Pool, votes: Sequence[V]) -> list[V]:
    fresh: list[int] = await pool.fetchval(
        _COUNT_BATCH,
        [v.vote_id for v in votes],
        [v.poll_id for v in votes],
        [v.choice for v in votes],
    )
    if len(fresh) == len(votes):
        return list(votes)
    return [votes[i - 1] for i in sorted(fresh)]


async def read_counts(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """All polls' totals: {poll: {choice: n}}."""
    result: dict[str, dict[str, int]] = {}
    for row in await pool.fetch("SELECT poll_id, choice, n FROM counts"):
        result.setdefault(row["poll_id"], {})[row["choice"]] = row["n"]
    return result
