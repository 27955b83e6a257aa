"""`kafka_consumer_lag_messages` against the real broker: records the group has not yet
committed, whatever the consumer fetched, and no series left behind for partitions it no
longer holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from shared.kafka import report_lag
from tests.support.kafka import create_topics

pytestmark = pytest.mark.integration


def lag(group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value("kafka_consumer_lag_messages", labels)


async def fill(bootstrap: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for n in range(count):
                await producer.send_and_wait(topic, b"%d" % n, partition=partition)
    finally:
        await producer.stop()


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"lag-{uuid.uuid4().hex[:10]}"
    await create_topics(kafka_bootstrap, name, partitions=2)
    await fill(kafka_bootstrap, name, {0: 10, 1: 4})
    return name


@pytest.fixture
async def consumer(kafka_bootstrap: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    client = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:10]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await client.start()
    client.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    try:
        yield client
    finally:
        await client.stop()


async def test_lag_counts_what_is_not_committed_even_once_fetched(
    consumer: AIOKafkaConsumer, topic: str
) -> None:
    group = f"lag-{uuid.uuid4().hex[:8]}"
    await report_lag(consumer, group)
    assert (lag(group, topic, 0), lag(group, topic, 1)) == (10, 4)

    # Everything fetched, but only three records of partition 0 committed: a consumer
    # stuck on its batch still owes the rest.
    fetched = 0
    while fetched < 14:
        batches = await consumer.getmany(timeout_ms=1000)
        fetched += sum(len(records) for records in batches.values())
    await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(3, "")})
    await report_lag(consumer, group)
    assert (lag(group, topic, 0), lag(group, topic, 1)) == (7, 4)


async def test_a_partition_no_longer_held_leaves_no_series(
    consumer: AIOKafkaConsumer, topic: str
) -> None:
    group = f"lag-{uuid.uuid4().hex[:8]}"
    await report_lag(consumer, group)
    assert lag(group, topic, 1) == 4

    consumer.assign([TopicPartition(topic, 0)])  # a rebalance gave partition 1 away
    await report_lag(consumer, group)
    assert lag(group, topic, 0) == 10
    assert lag(group, topic, 1) is None
