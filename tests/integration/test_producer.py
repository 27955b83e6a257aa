"""The producer every service publishes with, against the real broker: a send its caller
gave up on never reaches the log, and a producer whose sender stopped is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.producer import ReliableProducer
from tests.conftest import unique_name
from tests.support.kafka import create_topics

pytestmark = pytest.mark.integration

# Long enough that a record waits in the producer's buffer while its caller gives up.
LINGER_MS = 400


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = unique_name("producer")
    await create_topics(kafka_bootstrap, name, partitions=1)
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[ReliableProducer]:
    made = ReliableProducer(
        {"bootstrap_servers": kafka_bootstrap},
        client_id="producer-test",
        request_timeout_ms=5000,
        linger_ms=LINGER_MS,
    )
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def log_of(bootstrap: str, topic: str) -> list[bytes]:
    """Every record value the topic holds, read to its end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while len(values) < end:
            batch = await consumer.getmany(partition, timeout_ms=1000)
            values.extend(r.value or b"" for r in batch.get(partition, []))
        return values
    finally:
        await consumer.stop()


async def test_a_send_its_caller_gave_up_on_never_reaches_the_log(
    producer: ReliableProducer, kafka_bootstrap: str, topic: str
) -> None:
    # The topic's leader known first, so the record given up on waits in the buffer.
    await producer.send(topic, b"first", key=b"voter")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await producer.send(topic, b"given up", key=b"voter")
    await producer.send(topic, b"kept", key=b"voter")
    # Past the abandoned producer's linger: it would have sent by now had it been kept.
    await asyncio.sleep(3 * LINGER_MS / 1000)

    assert await log_of(kafka_bootstrap, topic) == [b"first", b"kept"]
    assert producer.discards == 1


async def test_a_batch_given_up_on_takes_none_of_its_records_to_the_log(
    producer: ReliableProducer, kafka_bootstrap: str, topic: str
) -> None:
    records = [(topic, f"decision {i}".encode(), b"voter") for i in range(5)]
    await producer.send(topic, b"first", key=b"voter")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await producer.send_many(records)
    await producer.send_many(records)
    await asyncio.sleep(3 * LINGER_MS / 1000)

    assert await log_of(kafka_bootstrap, topic) == [b"first", *(v for _, v, _ in records)]


async def test_a_producer_whose_sender_stopped_is_replaced_on_the_next_send(
    producer: ReliableProducer, kafka_bootstrap: str, topic: str
) -> None:
    await producer.send(topic, b"before", key=b"voter")
    # What aiokafka leaves after the broker fenced the producer: a sender task that ended.
    current = producer._producer
    assert current is not None
    current._sender.sender_task.cancel()
    await asyncio.sleep(0.1)

    async with asyncio.timeout(10):  # a dead sender would never answer
        await producer.send(topic, b"after", key=b"voter")

    assert producer.rebuilds == 1
    assert producer._producer is not current
    assert await log_of(kafka_bootstrap, topic) == [b"before", b"after"]
