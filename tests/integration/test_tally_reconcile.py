"""Reconcile rebuilds the counts from the Kafka log: it passes on honest counts, fails
with a readable diff after tampering, and --repair makes the live counts right again."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest

from services.tally.reconcile import reconcile
from shared.settings import DatabaseSettings
from tests.integration.test_tally import (
    CHOICES,
    Tally,
    accepted,
    records,
    start_consumer,
    tally,  # noqa: F401 - the fixture
)
from tests.support.kafka import eventually, produce

pytestmark = pytest.mark.integration


@pytest.fixture
async def counted(tally: Tally, database_url: str) -> AsyncIterator[tuple[Tally, str, str]]:  # noqa: F811
    """A tally consumer that has counted 120 votes (30 of them redelivered) and stays up."""
    poll = f"poll-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    votes = [accepted(poll, random.choice(CHOICES)) for _ in range(120)]
    await produce(tally.bootstrap, tally.topic, records(votes + votes[:30]))
    async for _ in start_consumer(tally, group):

        async def all_counted() -> bool:
            return sum((await tally.counts(poll)).values()) == len(votes)

        await eventually(all_counted, what="120 votes counted")
        yield tally, poll, group


async def run(t: Tally, group: str, database_url: str, *, repair: bool = False) -> int:
    schema = await t.pool.fetchval("SELECT current_schema()")
    settings = DatabaseSettings(kafka_bootstrap_servers=t.bootstrap, database_url=database_url)
    return await reconcile(
        settings, repair=repair, within=30, group=group, topic=t.topic, schema=schema
    )


async def test_reconcile_passes_then_catches_tampering_then_repairs(
    counted: tuple[Tally, str, str], database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t, poll, group = counted
    assert await run(t, group, database_url) == 0
    assert "OK: live counts equal the log" in capsys.readouterr().out

    honest = await t.counts(poll)
    choice = max(honest, key=lambda c: honest[c])
    await t.pool.execute(
        "UPDATE counts SET n = n + 7 WHERE poll_id = $1 AND choice = $2", poll, choice
    )
    assert await run(t, group, database_url) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out
    assert f"{poll}" in out and "diff +7" in out

    assert await run(t, group, database_url, repair=True) == 0
    assert "REPAIRED" in capsys.readouterr().out
    assert await t.counts(poll) == honest
    assert await run(t, group, database_url) == 0
