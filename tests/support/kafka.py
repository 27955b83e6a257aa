"""Test helpers for the real broker: unique topics, publishing raw records, reading back;
and a consumed record as aiokafka gives one, for handler tests without a broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from shared.kafka import ensure_topics


def consumed(
    value: bytes = b"{}",
    *,
    topic: str = "votes.accepted",
    partition: int = 0,
    offset: int = 0,
    key: bytes | None = None,
) -> ConsumerRecord[bytes, bytes]:
    """A record as a consumer receives it."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key) if key is not None else 0,
        serialized_value_size=len(value),
        headers=(),
    )


async def create_topics(bootstrap: str, *names: str, partitions: int = 4) -> None:
    await ensure_topics(bootstrap, partitions=partitions, replication=1, topics=names)


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs and wait until the broker has every one."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int, within: float = 30) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (JSON-decoded)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    found: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while len(found) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 30, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
