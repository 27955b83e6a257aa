"""Batch consumption with offsets committed only after the database commit.

A FastStream batch is one `getmany()` and can hold records of several partitions. The
handler decodes every record (undecodable ones go to the dead-letter topic and the batch
goes on), hands the decoded events to the service's store in one transaction, and only
then commits offsets. On failure every partition of the batch is rewound to its first
record, so a crash or a database outage replays the batch and never skips it; the stores
dedupe by vote_id, so a replay has no second effect.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from aiokafka import ConsumerRecord
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka.message import KafkaMessage
from faststream.message import StreamMessage
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from shared.events import TOPIC_DEADLETTER, VoteDeadLettered
from shared.kafka import dead_letter
from shared.producer import ReliableProducer

log = logging.getLogger(__name__)

E = TypeVar("E")
Decode = Callable[[bytes], E]

DEADLETTERED = Counter(
    "votes_deadlettered_total", "Records sent to the dead-letter topic", ["group", "topic"]
)

# aiokafka's sticky assignor has a known stall; round-robin spreads partitions evenly.
ASSIGNORS = (RoundRobinPartitionAssignor,)


def _raw_records(msg: StreamMessage[Any]) -> Any:
    """The batch as FastStream received it: handlers decode the records themselves.

    FastStream's own batch decoder builds a message object and parses JSON for every
    record before the handler runs; the handlers here never use that result, and it cost
    more CPU than everything else a tally batch does.
    """
    return msg.body


def subscriber_options(group: str, *, max_records: int = 2000) -> dict[str, Any]:
    return {
        "group_id": group,
        "decoder": _raw_records,
        "batch": True,
        "max_records": max_records,
        "batch_timeout_ms": 20,
        "ack_policy": AckPolicy.MANUAL,
        "auto_offset_reset": "earliest",
        "partition_assignment_strategy": ASSIGNORS,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
        "max_poll_interval_ms": 120_000,
    }


def decoder_for(model: type[E]) -> Decode[E]:
    """How a record's value becomes `model`: a pydantic event model, or a msgspec Struct
    (a consumer's hot path: the same checks on every field, several times cheaper)."""
    if issubclass(model, msgspec.Struct):
        return msgspec.json.Decoder(model).decode
    if issubclass(model, BaseModel):
        return model.model_validate_json
    raise TypeError(f"cannot decode records into {model!r}")


def decode_batch(
    records: Sequence[ConsumerRecord[Any, Any]],
    model: type[E],
    group: str,
    decode: Decode[E] | None = None,
) -> tuple[list[E], list[VoteDeadLettered]]:
    decode = decode or decoder_for(model)
    decoded: list[E] = []
    poisoned: list[VoteDeadLettered] = []
    for record in records:
        try:
            decoded.append(decode(record.value))
        except (ValidationError, msgspec.MsgspecError, ValueError, TypeError) as exc:
            poisoned.append(dead_letter(record, f"{type(exc).__name__}: {exc}", group))
    return decoded, poisoned


async def publish_dead_letters(
    producer: ReliableProducer,
    letters: Sequence[VoteDeadLettered],
    topic: str = TOPIC_DEADLETTER,
) -> None:
    for letter in letters:
        log.warning(
            "dead-lettered %s[%d]@%d: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.error[:200],
        )
    await producer.send_many(
        (
            topic,
            letter.model_dump_json().encode(),
            base64.b64decode(letter.key) if letter.key is not None else None,
        )
        for letter in letters
    )
    for letter in letters:
        DEADLETTERED.labels(letter.consumer, letter.topic).inc()


class BatchRunner:
    """Runs one batch: decode, dead-letter, handle, commit; rewind on any failure."""

    def __init__(
        self,
        producer: ReliableProducer,
        model: type[E],
        group: str,
        handle: Callable[[list[E]], Awaitable[None]],
        *,
        deadletter_topic: str = TOPIC_DEADLETTER,
    ) -> None:
        self.producer = producer
        self.model = model
        self.group = group
        self.handle = handle
        self.deadletter_topic = deadletter_topic
        self.decode = decoder_for(model)
        self.failures = 0

    async def __call__(self, msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        try:
            events, poisoned = decode_batch(records, self.model, self.group, self.decode)
            if poisoned:
                await publish_dead_letters(self.producer, poisoned, self.deadletter_topic)
            if events:
                await self.handle(events)
        except Exception:
            self.failures += 1
            delay = min(30.0, 0.2 * 2 ** min(self.failures, 8))
            log.exception("batch of %d failed; replaying in %.1fs", len(records), delay)
            await asyncio.sleep(delay)
            await msg.nack()
            return
        self.failures = 0
        try:
            await msg.ack()
        except KafkaError as exc:
            # The group rebalanced under us: the new owner replays from the last commit and
            # the stores dedupe by vote_id, so nothing is lost or counted twice.
            log.warning("offset commit failed (%s); the batch will be replayed", exc)
