"""Tally's tables: counted vote ids and the per-(poll, option) totals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.events import VoteAccepted

SCHEMA = "tally"

# One statement per batch: record the batch's vote ids (duplicates, from a replay or a
# redelivery, are skipped by the primary key), then add the new votes' sums to the totals.
# Rows are upserted in key order so two tally replicas never deadlock on the totals.
_COUNT_BATCH = """
WITH batch AS (
    SELECT DISTINCT ON (vote_id) vote_id, poll_id, choice, received_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         AS b(vote_id, poll_id, choice, received_at)
), fresh AS (
    INSERT INTO counted_votes (vote_id, poll_id, choice, received_at)
    SELECT vote_id, poll_id, choice, received_at FROM batch
    ON CONFLICT (vote_id) DO NOTHING
    RETURNING poll_id, choice, received_at
), bump AS (
    INSERT INTO counts AS c (poll_id, choice, n, updated_at)
    SELECT poll_id, choice, count(*), now() FROM fresh
    GROUP BY poll_id, choice ORDER BY poll_id, choice
    ON CONFLICT (poll_id, choice) DO UPDATE SET n = c.n + EXCLUDED.n, updated_at = now()
)
SELECT poll_id, choice, received_at FROM fresh
"""


@dataclass(frozen=True)
class Counted:
    poll_id: str
    choice: str
    received_at: datetime


async def count_batch(pool: asyncpg.Pool, votes: list[VoteAccepted]) -> list[Counted]:
    """Count the batch's votes that were not counted before; return those."""
    rows = await pool.fetch(
        _COUNT_BATCH,
        [v.vote_id for v in votes],
        [v.poll_id for v in votes],
        [v.choice for v in votes],
        [v.received_at for v in votes],
    )
    return [Counted(r["poll_id"], r["choice"], r["received_at"]) for r in rows]


async def read_counts(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """All polls' totals: {poll: {choice: n}}."""
    result: dict[str, dict[str, int]] = {}
    for row in await pool.fetch("SELECT poll_id, choice, n FROM counts"):
        result.setdefault(row["poll_id"], {})[row["choice"]] = row["n"]
    return result
