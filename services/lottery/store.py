"""Lottery's tables: days voted, the per-poll seed, entries and their voter ids, the draw
and the staff audit log. Names and phones arrive and leave sealed; nothing here decrypts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

SCHEMA = "lottery"

# Only transaction-level advisory locks, no SET or LISTEN: nothing outlives a use, so
# released connections skip asyncpg's reset statements.
POOL_RESETS_SESSION = False

Db = asyncpg.Pool | PoolConnectionProxy
"""A pool, or a connection already inside a transaction."""


@dataclass(frozen=True)
class VoterDay:
    poll_id: str
    voter_id: str
    day: date
    vote_id: str
    received_at: datetime


@dataclass(frozen=True)
class Commitment:
    poll_id: str
    seed_sealed: bytes
    commitment: str
    entry_key_id: str


@dataclass(frozen=True)
class SealedEntry:
    entry_id: str
    name_sealed: bytes
    phone_sealed: bytes


@dataclass(frozen=True)
class VoterEntry:
    entry: SealedEntry
    days: int
    # The latest day counted: a page that has just seen a vote accepted knows from it
    # whether that vote's day is counted yet.
    last_day: date | None


@dataclass(frozen=True)
class Draw:
    record: str
    ranked: list[dict[str, Any]]
    drawn_at: datetime
    drawn_by: str
    details_erased_at: datetime | None = None
    details_erased_by: str | None = None


# One statement per batch. A day is recorded once (the primary key), so a replay or a
# redelivery changes nothing; rows go in key order so two replicas never deadlock.
_RECORD_DAYS = """
INSERT INTO voter_days (poll_id, voter_id, day, vote_id, received_at)
SELECT DISTINCT ON (poll_id, voter_id, day) poll_id, voter_id, day, vote_id, received_at
FROM unnest($1::text[], $2::text[], $3::date[], $4::text[], $5::timestamptz[])
     AS b(poll_id, voter_id, day, vote_id, received_at)
ORDER BY poll_id, voter_id, day, received_at
ON CONFLICT (poll_id, voter_id, day) DO NOTHING
"""


async def record_days(pool: asyncpg.Pool, days: Sequence[VoterDay]) -> int:
    """Record the (poll, voter, day) rows not seen before; return how many were new."""
    if not days:
        return 0
    status = await pool.execute(
        _RECORD_DAYS,
        [d.poll_id for d in days],
        [d.voter_id for d in days],
        [d.day for d in days],
        [d.vote_id for d in days],
        [d.received_at for d in days],
    )
    return int(status.rsplit(" ", 1)[-1])


async def fix_commitment(pool: asyncpg.Pool, proposed: Commitment) -> Commitment:
    """Store `proposed` unless the poll already has a seed; return the one that stands.

    Insert-then-read, so two replicas racing at the open both publish the winner's
    commitment, and a restart never draws a new seed.
    """
    await pool.execute(
        "INSERT INTO commitments (poll_id, seed_sealed, commitment, entry_key_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (poll_id) DO NOTHING",
        proposed.poll_id,
        proposed.seed_sealed,
        proposed.commitment,
        proposed.entry_key_id,
    )
    stored = await commitment_of(pool, proposed.poll_id)
    if stored is None:
        raise RuntimeError(f"the commitment of {proposed.poll_id} vanished after its insert")
    return stored


async def commitment_of(db: Db, poll_id: str) -> Commitment | None:
    row = await db.fetchrow(
        "SELECT poll_id, seed_sealed, commitment, entry_key_id FROM commitments WHERE poll_id = $1",
        poll_id,
    )
    return None if row is None else Commitment(**dict(row))


async def register(pool: asyncpg.Pool, poll_id: str, voter_id: str, entry: SealedEntry) -> bool:
    """Link the voter id to the entry (creating or refreshing it); True if the voter id had
    no entry in this poll before.

    A voter id holds one number: registering another moves its link, and so its days, to
    the new entry. An entry left with no voter id is deleted with its sealed details.
    """
    for attempt in range(3):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await _register(conn, poll_id, voter_id, entry)
        except asyncpg.DeadlockDetectedError:
            # Two voters swapping numbers at the same instant lock the same two entries
            # in opposite orders; one of them is rolled back and simply runs again.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _register(
    conn: PoolConnectionProxy, poll_id: str, voter_id: str, entry: SealedEntry
) -> bool:
    previous: str | None = await conn.fetchval(
        "SELECT entry_id FROM entry_voters WHERE poll_id = $1 AND voter_id = $2 FOR UPDATE",
        poll_id,
        voter_id,
    )
    await conn.execute(
        "INSERT INTO entries (poll_id, entry_id, name_sealed, phone_sealed)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (poll_id, entry_id) DO UPDATE"
        " SET name_sealed = EXCLUDED.name_sealed, phone_sealed = EXCLUDED.phone_sealed,"
        " updated_at = now()",
        poll_id,
        entry.entry_id,
        entry.name_sealed,
        entry.phone_sealed,
    )
    await conn.execute(
        "INSERT INTO entry_voters (poll_id, voter_id, entry_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (poll_id, voter_id) DO UPDATE"
        " SET entry_id = EXCLUDED.entry_id, linked_at = now()",
        poll_id,
        voter_id,
        entry.entry_id,
    )
    if previous is not None and previous != entry.entry_id:
        await _drop_if_orphaned(conn, poll_id, previous)
    return previous is None


async def _drop_if_orphaned(conn: PoolConnectionProxy, poll_id: str, entry_id: str) -> None:
    # Lock first, then look for links in a separate statement: under READ COMMITTED that
    # statement sees a link another voter committed while we waited for the lock, so an
    # entry someone has just claimed is never deleted under them.
    locked = await conn.fetchval(
        "SELECT 1 FROM entries WHERE poll_id = $1 AND entry_id = $2 FOR UPDATE", poll_id, entry_id
    )
    linked = await conn.fetchval(
        "SELECT 1 FROM entry_voters WHERE poll_id = $1 AND entry_id = $2 LIMIT 1",
        poll_id,
        entry_id,
    )
    if locked and not linked:
        await conn.execute(
            "DELETE FROM entries WHERE poll_id = $1 AND entry_id = $2", poll_id, entry_id
        )


# Days of an entry: the distinct days of every voter id linked to it, and the latest.
_ENTRY_DAYS = """
SELECT count(DISTINCT d.day) AS days, max(d.day) AS last_day
FROM entry_voters l
JOIN voter_days d ON d.poll_id = l.poll_id AND d.voter_id = l.voter_id
WHERE l.poll_id = e.poll_id AND l.entry_id = e.entry_id
"""


async def entry_of_voter(pool: asyncpg.Pool, poll_id: str, voter_id: str) -> VoterEntry | None:
    row = await pool.fetchrow(
        "SELECT e.entry_id, e.name_sealed, e.phone_sealed, c.days, c.last_day"  # noqa: S608 (constant SQL)
        " FROM entry_voters v JOIN entries e USING (poll_id, entry_id)"
        f" CROSS JOIN LATERAL ({_ENTRY_DAYS}) c"
        " WHERE v.poll_id = $1 AND v.voter_id = $2",
        poll_id,
        voter_id,
    )
    if row is None:
        return None
    entry = SealedEntry(row["entry_id"], row["name_sealed"], row["phone_sealed"])
    return VoterEntry(entry, row["days"], row["last_day"])


async def weights(db: Db, poll_id: str) -> dict[str, int]:
    """Every entry of the poll with its weight (distinct days voted), zero included."""
    rows = await db.fetch(
        "SELECT e.entry_id, count(DISTINCT d.day) AS weight FROM entries e"
        " LEFT JOIN entry_voters l ON l.poll_id = e.poll_id AND l.entry_id = e.entry_id"
        " LEFT JOIN voter_days d ON d.poll_id = l.poll_id AND d.voter_id = l.voter_id"
        " WHERE e.poll_id = $1 GROUP BY e.entry_id",
        poll_id,
    )
    return {r["entry_id"]: r["weight"] for r in rows}


async def entry_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT poll_id, count(*) AS n FROM entries GROUP BY poll_id")
    return {r["poll_id"]: r["n"] for r in rows}


async def entry_count(pool: asyncpg.Pool, poll_id: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM entries WHERE poll_id = $1", poll_id)
    return count


async def sealed_entries(db: Db, poll_id: str, entry_ids: Iterable[str]) -> dict[str, SealedEntry]:
    rows = await db.fetch(
        "SELECT entry_id, name_sealed, phone_sealed FROM entries"
        " WHERE poll_id = $1 AND entry_id = ANY($2::text[])",
        poll_id,
        list(entry_ids),
    )
    return {r["entry_id"]: SealedEntry(**dict(r)) for r in rows}


async def all_entries(db: Db, poll_id: str) -> list[SealedEntry]:
    rows = await db.fetch(
        "SELECT entry_id, name_sealed, phone_sealed FROM entries WHERE poll_id = $1", poll_id
    )
    return [SealedEntry(**dict(r)) for r in rows]


async def erase_details(
    conn: PoolConnectionProxy,
    poll_id: str,
    masked: Sequence[SealedEntry],
    at: datetime,
    by: str,
) -> None:
    """Replace every entry's sealed details with the sealed masked ones, and say so on
    the poll's draw; the caller holds the draw lock, so both land together."""
    await conn.execute(
        "UPDATE entries e SET name_sealed = m.name_sealed, phone_sealed = m.phone_sealed,"
        " updated_at = now()"
        " FROM unnest($2::text[], $3::bytea[], $4::bytea[])"
        " AS m(entry_id, name_sealed, phone_sealed)"
        " WHERE e.poll_id = $1 AND e.entry_id = m.entry_id",
        poll_id,
        [e.entry_id for e in masked],
        [e.name_sealed for e in masked],
        [e.phone_sealed for e in masked],
    )
    await conn.execute(
        "UPDATE draws SET details_erased_at = $2, details_erased_by = $3 WHERE poll_id = $1",
        poll_id,
        at,
        by,
    )


@contextlib.asynccontextmanager
async def draw_lock(pool: asyncpg.Pool, poll_id: str) -> AsyncIterator[PoolConnectionProxy]:
    """A transaction holding the poll's draw lock: only one draw of a poll runs at a time,
    across every replica, and the second finds the first one's row once it gets the lock.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':draw:' || $1))", poll_id
        )
        yield conn


_DRAW_COLUMNS = "record, ranked, drawn_at, drawn_by, details_erased_at, details_erased_by"


async def draw_of(db: Db, poll_id: str) -> Draw | None:
    row = await db.fetchrow(f"SELECT {_DRAW_COLUMNS} FROM draws WHERE poll_id = $1", poll_id)  # noqa: S608 (constant SQL)
    return None if row is None else _draw(row)


async def all_draws(pool: asyncpg.Pool) -> dict[str, Draw]:
    rows = await pool.fetch(f"SELECT poll_id, {_DRAW_COLUMNS} FROM draws")  # noqa: S608 (constant SQL)
    return {r["poll_id"]: _draw(r) for r in rows}


async def drawn_polls(pool: asyncpg.Pool) -> set[str]:
    """The ids of the polls drawn, without their records."""
    return {r["poll_id"] for r in await pool.fetch("SELECT poll_id FROM draws")}


def _draw(row: asyncpg.Record) -> Draw:
    return Draw(
        row["record"],
        json.loads(row["ranked"]),
        row["drawn_at"],
        row["drawn_by"],
        row["details_erased_at"],
        row["details_erased_by"],
    )


async def save_draw(conn: PoolConnectionProxy, poll_id: str, draw: Draw) -> None:
    # No ON CONFLICT: under the draw lock a second insert is a bug, and the primary key
    # turns it into an error rather than a second draw.
    await conn.execute(
        "INSERT INTO draws (poll_id, record, ranked, drawn_at, drawn_by)"
        " VALUES ($1, $2, $3::jsonb, $4, $5)",
        poll_id,
        draw.record,
        json.dumps(draw.ranked, ensure_ascii=False),
        draw.drawn_at,
        draw.drawn_by,
    )


async def note_staff_call(
    pool: asyncpg.Pool, staff: str, action: str, poll_id: str | None, outcome: str
) -> None:
    await pool.execute(
        "INSERT INTO staff_audit (staff, action, poll_id, outcome) VALUES ($1, $2, $3, $4)",
        staff,
        action,
        poll_id,
        outcome,
    )
