"""The pipeline probe against the real broker: what is left of the votes before a close.

Two fresh topics stand for votes.submitted and votes.accepted; offsets are committed as
antifraud and the recorder (lottery or tally) would commit them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.drain import PipelineProbe
from tests.conftest import unique_name
from tests.support.kafka import create_topics, produce

CLOSE = datetime(2022, 1, 8, 1, 0, tzinfo=UTC)


@pytest.fixture
async def probe(kafka_bootstrap: str) -> AsyncIterator[PipelineProbe]:
    started = PipelineProbe({"bootstrap_servers": kafka_bootstrap})
    await started.start()
    yield started
    await started.stop()


async def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Commit `offset` on partition 0 of `topic` for `group`, as its consumer would."""
    partition = TopicPartition(topic, 0)
    committer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await committer.start()
    try:
        committer.assign([partition])
        await committer.commit({partition: offset})
    finally:
        await committer.stop()


def records(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"k", b"{}")] * n


async def test_votes_after_the_close_do_not_hold_back_what_is_left_before_it(
    probe: PipelineProbe, kafka_bootstrap: str
) -> None:
    submitted, accepted = unique_name("submitted"), unique_name("accepted")
    await create_topics(kafka_bootstrap, submitted, accepted, partitions=1)
    decider, recorder = ("antifraud-" + submitted, submitted), ("lottery-" + accepted, accepted)
    keys = (f"{decider[0]}/{submitted}", f"{recorder[0]}/{accepted}")

    # Five votes reached Kafka before the close; none is decided yet.
    await produce(kafka_bootstrap, submitted, records(5))
    assert await probe.left_through(CLOSE, decider, recorder) == {keys[0]: 5, keys[1]: 0}

    # Votes for other polls keep arriving: what is left of the close stays at five.
    await produce(kafka_bootstrap, submitted, records(7))
    assert await probe.left_through(CLOSE, decider, recorder) == {keys[0]: 5, keys[1]: 0}

    # Antifraud passes the close's votes (not the later ones); three of its decisions are
    # published by then, and more follow for the later votes.
    await produce(kafka_bootstrap, accepted, records(3))
    await commit(kafka_bootstrap, decider[0], submitted, 5)
    assert await probe.left_through(CLOSE, decider, recorder) == {keys[0]: 0, keys[1]: 3}
    await produce(kafka_bootstrap, accepted, records(4))
    assert await probe.left_through(CLOSE, decider, recorder) == {keys[0]: 0, keys[1]: 3}

    # The recorder has the three: the close is through, though neither group is idle.
    await commit(kafka_bootstrap, recorder[0], accepted, 3)
    assert await probe.left_through(CLOSE, decider, recorder) == {keys[0]: 0, keys[1]: 0}
    lag = await probe.total_lag([decider, recorder])
    assert lag == {keys[0]: 7, keys[1]: 4}

    # A later close is asked about afresh: it waits for everything received by then.
    later = datetime(2022, 1, 9, tzinfo=UTC)
    assert await probe.left_through(later, decider, recorder) == {keys[0]: 7, keys[1]: 4}
