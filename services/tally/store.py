"""Tally's tables: counted vote ids and the per-(poll, option) totals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import asyncpg

SCHEMA = "tally"

# Tally's pooled connections hold no session state (every statement is its own
# transaction, no SET, no session locks), so the pool skips asyncpg's reset statement:
# half the statements a batch costs. An open transaction is still rolled back.
POOL_RESETS_SESSION = False

# One statement per batch: record the batch's vote ids (duplicates, from a replay or a
# redelivery, are skipped by the primary key), then add the new votes' sums to the totals.
# Rows are upserted in key order so two tally replicas never deadlock on the totals.
# It answers with the batch positions (1-based) of the votes that were new.
_COUNT_BATCH = """
WITH batch AS (
    SELECT DISTINCT ON (vote_id) vote_id, poll_id, choice, received_at, i
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         WITH ORDINALITY AS b(vote_id, poll_id, choice, received_at, i)
), fresh AS (
    INSERT INTO counted_votes (vote_id, poll_id, choice, received_at)
    SELECT vote_id, poll_id, choice, received_at FROM batch
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


class Countable(Protocol):
    """What counting needs of an accepted vote (the event model or its fast decoding)."""

    @property
    def vote_id(self) -> str: ...
    @property
    def poll_id(self) -> str: ...
    @property
    def choice(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...


V = TypeVar("V", bound=Countable)


async def count_batch(pool: asyncpg.Pool, votes: Sequence[V]) -> list[V]:
    """Count the batch's votes that were not counted before; return those."""
    fresh: list[int] = await pool.fetchval(
        _COUNT_BATCH,
        [v.vote_id for v in votes],
        [v.poll_id for v in votes],
        [v.choice for v in votes],
        [v.received_at for v in votes],
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
