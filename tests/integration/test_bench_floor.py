"""The ingest benchmark's floor sends through the edge's own producer to the real broker."""

from __future__ import annotations

import uuid

import pytest

from bench import floor
from tests.support.kafka import create_topics, read_all

pytestmark = pytest.mark.integration


async def test_every_measured_send_reaches_the_broker(kafka_bootstrap: str) -> None:
    topic = f"floor-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka_bootstrap, topic)
    records = [(f"v-{i}".encode(), b'{"vote": %d}' % i) for i in range(60)]

    send_cpu, idle_cpu, failures = await floor.edge_send_us(kafka_bootstrap, topic, records, 300.0)

    assert failures == 0
    assert send_cpu > 0
    assert idle_cpu > 0
    # Warmed up with the same 60, then the 60 measured: every one in the log, twice.
    found = await read_all(kafka_bootstrap, topic, expect=120)
    assert sorted(v["vote"] for v in found) == sorted([*range(60), *range(60)])
