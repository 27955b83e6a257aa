"""Tally against the real Kafka broker and PostgreSQL: every accepted vote counted once."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.tally import consumer, store
from shared.events import VoteAccepted
from shared.kafka import make_broker, make_producer
from shared.pg import connect_and_migrate
from shared.settings import ServiceSettings
from tests.support.kafka import create_topics, eventually, produce, read_all

pytestmark = pytest.mark.integration

MIGRATIONS = Path(consumer.__file__).parent / "migrations"
CHOICES = ("excellent", "good", "fair", "poor")


@dataclass
class Tally:
    bootstrap: str
    topic: str
    deadletter: str
    pool: asyncpg.Pool

    async def counts(self, poll: str) -> dict[str, int]:
        return (await store.read_counts(self.pool)).get(poll, {})


def accepted(poll: str, choice: str, voter: str | None = None) -> VoteAccepted:
    now = datetime.now(UTC)
    return VoteAccepted(
        vote_id=str(uuid.uuid4()),
        poll_id=poll,
        choice=choice,
        voter_id=voter or f"v-{uuid.uuid4().hex[:12]}",
        day=date.today(),
        received_at=now,
        decided_at=now,
    )


def records(votes: list[VoteAccepted]) -> list[tuple[bytes, bytes]]:
    return [(v.voter_id.encode(), v.model_dump_json().encode()) for v in votes]


async def start_consumer(t: Tally, group: str) -> AsyncIterator[None]:
    settings = ServiceSettings(kafka_bootstrap_servers=t.bootstrap)
    broker = make_broker(settings, client_id=group)
    producer = make_producer(settings, client_id=group)
    await producer.start()
    consumer.attach(
        broker,
        t.pool,
        topic=t.topic,
        group=group,
        deadletter_topic=t.deadletter,
        producer=producer,
    )
    try:
        async with broker:
            await broker.start()
            yield
    finally:
        await producer.stop()


@pytest.fixture
async def tally(kafka_bootstrap: str, database_url: str) -> AsyncIterator[Tally]:
    suffix = uuid.uuid4().hex[:10]
    topic, deadletter, schema = f"t-accepted-{suffix}", f"t-dlq-{suffix}", f"tally_{suffix}"
    await create_topics(kafka_bootstrap, topic, deadletter)
    pool = await connect_and_migrate(database_url, schema, MIGRATIONS)
    try:
        yield Tally(kafka_bootstrap, topic, deadletter, pool)
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def test_duplicates_change_nothing(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    votes = [accepted(poll, random.choice(CHOICES)) for _ in range(300)]
    truth = Counter(v.choice for v in votes)
    await produce(tally.bootstrap, tally.topic, records(votes + random.sample(votes, 60)))

    async for _ in start_consumer(tally, f"g-{uuid.uuid4().hex[:8]}"):

        async def all_counted() -> bool:
            return sum((await tally.counts(poll)).values()) >= len(votes)

        await eventually(all_counted, what="300 votes counted")
        # Redeliver everything again: counts must not move.
        await produce(tally.bootstrap, tally.topic, records(votes))
        await eventually(lambda: _counted_rows(tally, len(votes)), what="duplicates to be seen")
    assert await tally.counts(poll) == dict(truth)


async def _counted_rows(tally: Tally, n: int) -> bool:
    return int(await tally.pool.fetchval("SELECT count(*) FROM counted_votes")) == n


async def test_a_second_group_replaying_the_log_counts_nothing_twice(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    votes = [accepted(poll, random.choice(CHOICES)) for _ in range(200)]
    await produce(tally.bootstrap, tally.topic, records(votes))
    for group in (f"g1-{uuid.uuid4().hex[:8]}", f"g2-{uuid.uuid4().hex[:8]}"):
        async for _ in start_consumer(tally, group):
            lag_free = _group_done(tally, group, len(votes))
            await eventually(lag_free, what=f"group {group} to read every record")
    assert await tally.counts(poll) == dict(Counter(v.choice for v in votes))


def _group_done(tally: Tally, group: str, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=tally.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        done: int = sum(m.offset for m in offsets.values() if m.offset > 0)
        return done >= n

    return check


async def test_poisoned_record_is_dead_lettered_and_counting_goes_on(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    before = [accepted(poll, "good") for _ in range(5)]
    after = [accepted(poll, "poor") for _ in range(5)]
    poison = [(b"v-poison", b"{not json"), (b"v-poison", b'{"vote_id": 1}')]
    await produce(tally.bootstrap, tally.topic, records(before) + poison + records(after))
    async for _ in start_consumer(tally, f"g-{uuid.uuid4().hex[:8]}"):

        async def all_counted() -> bool:
            return await tally.counts(poll) == {"good": 5, "poor": 5}

        await eventually(all_counted, what="votes around the poison to be counted")
    letters = await read_all(tally.bootstrap, tally.deadletter, expect=2)
    assert sorted(letter["raw"] for letter in letters) == sorted(
        base64.b64encode(value).decode() for _, value in poison
    )
    assert {letter["topic"] for letter in letters} == {tally.topic}


async def test_a_batch_that_fails_in_the_database_is_replayed_not_skipped(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    first = [accepted(poll, "fair") for _ in range(50)]
    second = [accepted(poll, "excellent") for _ in range(50)]
    async for _ in start_consumer(tally, f"g-{uuid.uuid4().hex[:8]}"):
        await produce(tally.bootstrap, tally.topic, records(first))

        async def first_counted() -> bool:
            return (await tally.counts(poll)).get("fair") == 50

        await eventually(first_counted, what="first wave")
        # Break the table the batch writes to: every batch now fails and is rewound.
        await tally.pool.execute("ALTER TABLE counts RENAME TO counts_offline")
        await produce(tally.bootstrap, tally.topic, records(second))
        await asyncio.sleep(3)
        await tally.pool.execute("ALTER TABLE counts_offline RENAME TO counts")

        async def second_counted() -> bool:
            return (await tally.counts(poll)).get("excellent") == 50

        await eventually(second_counted, what="the failed batches to be replayed")
    assert await tally.counts(poll) == {"fair": 50, "excellent": 50}


def _countable(votes: list[VoteAccepted]) -> list[consumer.AcceptedVote]:
    return [consumer.AcceptedVote(**v.model_dump()) for v in votes]


async def test_a_large_batch_is_counted_once_whatever_it_repeats(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    votes = _countable([accepted(poll, random.choice(CHOICES)) for _ in range(2 * store.COPY_FROM)])
    first = await store.count_batch(tally.pool, votes)
    assert len(first.votes) == len(votes)
    # All known, then half known with a repeat inside the batch: only new ids count.
    assert (await store.count_batch(tally.pool, votes)).votes == []
    more = _countable([accepted(poll, "good") for _ in range(store.COPY_FROM)])
    mixed = await store.count_batch(tally.pool, [*more, *votes[:300], more[0]])
    assert sorted(v.vote_id for v in mixed.votes) == sorted(v.vote_id for v in more)
    assert mixed.totals == {(poll, "good"): len(more)}
    truth = Counter(v.choice for v in votes) + Counter(v.choice for v in more)
    assert await tally.counts(poll) == dict(truth)
    recorded = await tally.pool.fetch(
        "SELECT choice, count(*) AS n FROM counted_votes WHERE poll_id = $1 GROUP BY choice", poll
    )
    assert {row["choice"]: row["n"] for row in recorded} == dict(truth)


async def test_a_backlog_with_redeliveries_is_counted_once(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    votes = [accepted(poll, random.choice(CHOICES)) for _ in range(6000)]
    backlog = votes + random.sample(votes, 500)
    random.shuffle(backlog)
    await produce(tally.bootstrap, tally.topic, records(backlog))
    group = f"g-{uuid.uuid4().hex[:8]}"
    async for _ in start_consumer(tally, group):
        await eventually(_group_done(tally, group, len(backlog)), what="the backlog committed")
    assert await tally.counts(poll) == dict(Counter(v.choice for v in votes))
    assert await _counted_rows(tally, len(votes))


async def test_large_batches_that_fail_in_the_database_are_replayed(tally: Tally) -> None:
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    votes = [accepted(poll, random.choice(CHOICES)) for _ in range(5000)]
    await tally.pool.execute("ALTER TABLE counts RENAME TO counts_offline")
    await produce(tally.bootstrap, tally.topic, records(votes))
    group = f"g-{uuid.uuid4().hex[:8]}"
    async for _ in start_consumer(tally, group):
        await asyncio.sleep(3)  # batches are written (COPY) and fail at the totals
        assert not await _group_done(tally, group, 1)()
        await tally.pool.execute("ALTER TABLE counts_offline RENAME TO counts")
        await eventually(_group_done(tally, group, len(votes)), what="the failed batches replayed")
    assert await tally.counts(poll) == dict(Counter(v.choice for v in votes))
    assert await _counted_rows(tally, len(votes))
