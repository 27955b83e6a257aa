"""Rebuild the counts from the Kafka log and compare them with the live ones.

    python -m services.tally.reconcile [--repair] [--timeout SECONDS]

votes.accepted is the system of record (contract section 7). This command re-reads it
from the beginning, recounts it into a scratch table (`recount`, one run id per call)
deduplicating by vote_id, and compares with the live `counts`. The comparison is exact:
it is taken at a moment when the tally group has committed every record up to the end
offsets read, and no new vote is counted while the live side is read (it retries while
votes flow). Exit 0 when equal, 1 with a readable diff, 2 when no quiet moment was found.

--repair makes the live tables equal to the log, under a lock that holds the consumer's
writes back: counted vote ids missing from the log are removed, ids in the log missing
from the live table are added, and the counts are replaced by the recount.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.tally import consumer, store
from shared.events import TOPIC_ACCEPTED
from shared.kafka import client_options
from shared.settings import DatabaseSettings, load_settings

Key = tuple[str, str]


@dataclass
class LogCount:
    votes: dict[str, Key] = field(default_factory=dict)  # vote_id -> (poll, choice)
    duplicates: int = 0
    undecodable: int = 0

    @property
    def counts(self) -> Counter[Key]:
        return Counter(self.votes.values())


@dataclass(frozen=True)
class Snapshot:
    counts: Counter[Key]
    counted_ids: frozenset[str]


async def _end_offsets(options: dict[str, object], topic: str) -> dict[TopicPartition, int]:
    reader = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        if not partitions:
            await reader._client.force_metadata_update()
            ids = reader.partitions_for_topic(topic) or ()
            partitions = [TopicPartition(topic, p) for p in ids]
        ends: dict[TopicPartition, int] = await reader.end_offsets(partitions)
        return ends
    finally:
        await reader.stop()


async def read_log(
    options: dict[str, object], topic: str, ends: dict[TopicPartition, int]
) -> LogCount:
    """Every record of `topic` below `ends`, deduplicated by vote_id."""
    result = LogCount()
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    if not wanted:
        return result
    reader = AIOKafkaConsumer(**options, enable_auto_commit=False)
    await reader.start()
    try:
        reader.assign(list(wanted))
        await reader.seek_to_beginning(*wanted)
        done: set[TopicPartition] = set()
        while len(done) < len(wanted):
            batch = await reader.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < wanted[tp]:
                        _tally_record(result, record.value)
                if await reader.position(tp) >= wanted[tp]:
                    done.add(tp)
            for tp in wanted:
                if tp not in done and await reader.position(tp) >= wanted[tp]:
                    done.add(tp)
    finally:
        await reader.stop()
    return result


def _tally_record(result: LogCount, value: bytes | None) -> None:
    try:
        event = json.loads(value or b"")
        key = (str(event["poll_id"]), str(event["choice"]))
        vote_id = str(event["vote_id"])
    except (ValueError, KeyError, TypeError):
        result.undecodable += 1
        return
    if vote_id in result.votes:
        result.duplicates += 1
    else:
        result.votes[vote_id] = key


async def _committed(
    options: dict[str, object], group: str, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    finally:
        await admin.close()
    return {tp: max(0, meta.offset) for tp, meta in offsets.items()}


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    rows = await conn.fetch("SELECT poll_id, choice, n FROM counts")
    ids = await conn.fetch("SELECT vote_id FROM counted_votes")
    return Snapshot(
        Counter({(r["poll_id"], r["choice"]): r["n"] for r in rows if r["n"]}),
        frozenset(r["vote_id"] for r in ids),
    )


def diff_lines(live: Counter[Key], log: Counter[Key]) -> list[str]:
    keys = sorted(set(live) | set(log))
    lines = []
    for poll, choice in keys:
        a, b = live.get((poll, choice), 0), log.get((poll, choice), 0)
        if a != b:
            lines.append(f"  {poll:<32} {choice:<10} live {a:>10}  log {b:>10}  diff {a - b:+d}")
    return lines


async def _quiet_moment(
    options: dict[str, object], group: str, topic: str, within: float
) -> dict[TopicPartition, int] | None:
    """End offsets that the group has committed entirely, or None after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ends = await _end_offsets(options, topic)
        committed = await _committed(options, group, list(ends))
        if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
            return ends
        await asyncio.sleep(0.5)
    return None


async def reconcile(
    settings: DatabaseSettings,
    *,
    repair: bool,
    within: float,
    group: str = consumer.GROUP,
    topic: str = TOPIC_ACCEPTED,
    schema: str = store.SCHEMA,
) -> int:
    options = client_options(settings)
    conn = await asyncpg.connect(
        settings.database_url.get_secret_value(), server_settings={"search_path": schema}
    )
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ends = await _quiet_moment(options, group, topic, deadline - time.monotonic())
            if ends is None:
                break
            live = await snapshot(conn)
            if await _end_offsets(options, topic) != ends:
                continue  # votes arrived while the live side was read: try again
            log = await read_log(options, topic, ends)
            return await _report(conn, live, log, ends, repair=repair, options=options, topic=topic)
        print("no quiet moment: votes kept arriving or the tally group lags", file=sys.stderr)
        return 2
    finally:
        await conn.close()


async def _report(
    conn: asyncpg.Connection,
    live: Snapshot,
    log: LogCount,
    ends: dict[TopicPartition, int],
    *,
    repair: bool,
    options: dict[str, object],
    topic: str,
) -> int:
    run_id = uuid.uuid4().hex[:12]
    recount = log.counts
    async with conn.transaction():
        await conn.execute("DELETE FROM recount WHERE run_id <> $1", run_id)
        await conn.executemany(
            "INSERT INTO recount (run_id, poll_id, choice, n) VALUES ($1, $2, $3, $4)",
            [(run_id, p, c, n) for (p, c), n in sorted(recount.items())],
        )
    missing = set(log.votes) - live.counted_ids
    extra = live.counted_ids - set(log.votes)
    lines = diff_lines(live.counts, recount)
    total = sum(recount.values())
    print(
        f"log: {total} votes ({log.duplicates} duplicate records, {log.undecodable} undecodable)"
        f" up to offsets {sum(ends.values())}; recount run {run_id}"
    )
    if not lines and not missing and not extra:
        print("OK: live counts equal the log")
        return 0
    print("MISMATCH between live counts and the log:")
    print("\n".join(lines) or "  (totals agree)")
    print(
        f"  vote ids in the log but not counted: {len(missing)};"
        f" counted but not in the log: {len(extra)}"
    )
    if not repair:
        return 1
    await _repair(conn, log, recount, ends, options=options, topic=topic)
    print("REPAIRED: live counts replaced by the recount")
    return 0


async def _repair(
    conn: asyncpg.Connection,
    log: LogCount,
    recount: Counter[Key],
    ends: dict[TopicPartition, int],
    *,
    options: dict[str, object],
    topic: str,
) -> None:
    async with conn.transaction():
        # Holds the consumer's batch statement back until the repair commits.
        await conn.execute("LOCK TABLE counted_votes, counts IN SHARE ROW EXCLUSIVE MODE")
        if await _end_offsets(options, topic) != ends:
            raise SystemExit("votes arrived during the repair; run it again")
        ids = list(log.votes)
        await conn.execute("DELETE FROM counted_votes WHERE NOT (vote_id = ANY($1::text[]))", ids)
        await conn.execute(
            "INSERT INTO counted_votes (vote_id, poll_id, choice)"
            " SELECT v, p, c FROM unnest($1::text[], $2::text[], $3::text[]) AS x(v, p, c)"
            " ON CONFLICT (vote_id) DO NOTHING",
            ids,
            [log.votes[i][0] for i in ids],
            [log.votes[i][1] for i in ids],
        )
        await conn.execute("DELETE FROM counts")
        await conn.executemany(
            "INSERT INTO counts (poll_id, choice, n) VALUES ($1, $2, $3)",
            [(p, c, n) for (p, c), n in sorted(recount.items())],
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.tally.reconcile")
    parser.add_argument("--repair", action="store_true", help="make the live counts equal the log")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for a quiet moment"
    )
    args = parser.parse_args(argv)
    settings = load_settings(DatabaseSettings)
    return asyncio.run(reconcile(settings, repair=args.repair, within=args.timeout))


if __name__ == "__main__":
    sys.exit(main())
