"""Batch consumption with offsets committed only after the database commit.

A FastStream batch is one `getmany()` and can hold records of several partitions. The
handler decodes every record (undecodable ones go to the dead-letter topic and the batch
goes on), hands the decoded events to the service's store in one transaction, and only
then commits offsets. On failure every partition of the batch is rewound to its first
record, so a crash or a database outage replays the batch and never skips it; the stores
dedupe by vote_id, so a replay has no second effect. A consumer whose batches are large
can overlap them (`BatchRunner(..., overlap=subscriber)`): the next batch is fetched
and decoded while the database writes this one, with the same guarantees.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
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

# Decoded records that may wait behind the write in flight (overlap mode). The writer
# takes all that wait as one batch: as many as a catch-up fetch brings keeps it busy,
# and small batches arriving during a write share the next transaction.
QUEUED_RECORDS = 10_000

Offsets = dict[TopicPartition, int]
_UNDECODABLE = (ValidationError, msgspec.MsgspecError, ValueError, TypeError)
_value = attrgetter("value")
_position = attrgetter("topic", "partition")


async def _raw_records(msg: StreamMessage[Any]) -> Any:
    """The batch as FastStream received it: handlers decode the records themselves.

    FastStream's own batch decoder builds a message object and parses JSON for every
    record before the handler runs; the handlers here never use that result, and it cost
    more CPU than everything else a tally batch does. A coroutine: FastStream runs a plain
    function given as a decoder in a worker thread, a thread hand-off for every batch.
    """
    return msg.body


async def _parse_batch(
    records: tuple[ConsumerRecord[Any, Any], ...],
    parse: Callable[[tuple[ConsumerRecord[Any, Any], ...]], Awaitable[StreamMessage[Any]]],
) -> StreamMessage[Any]:
    """FastStream's batch message, built from the first record and then given them all.

    FastStream's batch parser decodes every record's headers into a dict of its own,
    which no handler here reads; at 10,000 records a batch that cost tally a sixth of its
    CPU. The body keeps every record's value (the Prometheus middleware measures it).
    """
    msg = await parse(records[:1])
    first, last = records[0], records[-1]
    msg.raw_message = records
    msg.body = list(map(_value, records))
    msg.message_id = f"{first.offset}-{last.offset}-{first.timestamp}"
    return msg


# The broker holds a consumer's fetch until this much is waiting or this long has passed.
# Without it a fetch returns with the first record, so at a few thousand votes a second
# every consumer ran a batch (a transaction and its statements) per handful of votes.
# Measured in the whole pipeline at 1,000 votes/s: Postgres statements per vote 0.32-0.49
# -> 0.12; every process (services, Kafka, Postgres, load generator) together 1.7-1.9
# -> 1.4-1.5 CPU ms per vote; the decision delay stayed as it was (p99 ~140 ms) and the
# count delay grew by about 50-100 ms, against objectives of 1 s and 2 s. A backlog
# fills the bytes at once.
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 100


def subscriber_options(group: str, *, max_records: int = 2000) -> dict[str, Any]:
    return {
        "group_id": group,
        "parser": _parse_batch,
        "decoder": _raw_records,
        "batch": True,
        "max_records": max_records,
        "batch_timeout_ms": 20,
        "fetch_min_bytes": FETCH_MIN_BYTES,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
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
    try:
        # The usual batch, every record good: decoded without a Python loop per record.
        return list(map(decode, map(_value, records))), []
    except _UNDECODABLE:
        pass
    decoded: list[E] = []
    poisoned: list[VoteDeadLettered] = []
    for record in records:
        try:
            decoded.append(decode(record.value))
        except _UNDECODABLE as exc:
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


class Subscriber(Protocol):
    """What overlapping needs of the FastStream subscriber: the lock its graceful stop
    waits on (held by every handler in progress)."""

    lock: AbstractContextManager[Any]


@dataclass(frozen=True)
class _Prepared(Generic[E]):
    """A decoded batch waiting for its write, and the offsets it spans."""

    events: list[E]
    starts: Offsets
    ends: Offsets


class BatchRunner(Generic[E]):
    """Runs one batch: decode, dead-letter, handle, commit; rewind on any failure.

    With `overlap=subscriber`, decoded batches are queued for a writer and the runner returns,
    so the next batch is fetched and decoded while the database works on this one (the
    two sides then use both cores). The writer takes what waits as one batch, writes one
    at a time, in order, and commits offsets only once the transaction that covers them
    has committed: a crash replays, never skips. A write that fails, after the backoff,
    rewinds its partitions to where it starts, and the batches fetched before that rewind
    are dropped unwritten. The subscriber's graceful stop waits for the write and the
    offset commit in flight (they hold its lock, as a handler does), so the consumer is
    not stopped under them; past its timeout, written batches whose offsets were not
    committed are replayed and the stores skip them.
    """

    def __init__(
        self,
        producer: ReliableProducer,
        model: type[E],
        group: str,
        handle: Callable[[list[E]], Awaitable[None]],
        *,
        deadletter_topic: str = TOPIC_DEADLETTER,
        overlap: Subscriber | None = None,
    ) -> None:
        self.producer = producer
        self.model = model
        self.group = group
        self.handle = handle
        self.deadletter_topic = deadletter_topic
        self.decode = decoder_for(model)
        self.failures = 0
        self.overlap = overlap
        self._queue: deque[_Prepared[E]] = deque()
        self._room = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._rewound: Offsets | None = None  # where a failed write rewound to
        self._written: Offsets = {}  # in the database, offsets not yet committed
        self._committing: asyncio.Task[None] | None = None

    async def __call__(self, msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        if self.overlap is not None and isinstance(msg.consumer, AIOKafkaConsumer):
            await self._overlapped(msg.consumer, records)
            return
        try:
            events = await self._prepare(records)
            if events:
                await self.handle(events)
        except Exception as exc:
            await self._back_off(len(records), exc)
            await msg.nack()
            return
        self.failures = 0
        try:
            await msg.ack()
        except KafkaError as exc:
            # The group rebalanced under us: the new owner replays from the last commit and
            # the stores dedupe by vote_id, so nothing is lost or counted twice.
            log.warning("offset commit failed (%s); the batch will be replayed", exc)

    async def _prepare(self, records: Sequence[ConsumerRecord[Any, Any]]) -> list[E]:
        events, poisoned = decode_batch(records, self.model, self.group, self.decode)
        if poisoned:
            await publish_dead_letters(self.producer, poisoned, self.deadletter_topic)
        return events

    async def _back_off(self, size: int, exc: Exception) -> None:
        self.failures += 1
        delay = min(30.0, 0.2 * 2 ** min(self.failures, 8))
        log.error("batch of %d failed; replaying in %.1fs", size, delay, exc_info=exc)
        await asyncio.sleep(delay)

    async def _overlapped(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]
    ) -> None:
        starts, ends = offset_range(records)
        try:
            events = await self._prepare(records)
        except Exception as exc:
            await self._back_off(len(records), exc)
            self._drop(consumer, starts)
            return
        while sum(len(waiting.events) for waiting in self._queue) >= QUEUED_RECORDS:
            self._room.clear()
            await self._room.wait()
        # No await from this check to the append: a failed write cannot slip in between.
        if self._rewound is not None:
            self._drop(consumer, starts)
            return
        self._queue.append(_Prepared(events, starts, ends))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(consumer))
            # Let the write send its first statement before the next fetch and decode
            # take the loop: from then on the database works while this process does.
            await asyncio.sleep(0)

    def _drop(self, consumer: AIOKafkaConsumer, starts: Offsets) -> None:
        """Rewind a batch that will not be written to its start, or to where a failed
        write rewound if earlier: the batch was fetched before that rewind, or is its
        replay."""
        rewound, self._rewound = self._rewound or {}, None
        _seek(consumer, {tp: min(at, rewound.get(tp, at)) for tp, at in starts.items()})

    def _in_flight(self) -> AbstractContextManager[Any]:
        """Held while overlapped work runs: the subscriber's stop waits for it."""
        return self.overlap.lock if self.overlap is not None else nullcontext()

    async def _write_queued(self, consumer: AIOKafkaConsumer) -> None:
        with self._in_flight():
            await self._write_waiting(consumer)

    async def _write_waiting(self, consumer: AIOKafkaConsumer) -> None:
        while self._queue:
            batch = _merged(self._queue)
            self._queue.clear()
            self._room.set()
            try:
                if batch.events:
                    await self.handle(batch.events)
            except Exception as exc:
                await self._back_off(
                    sum(batch.ends[tp] - at for tp, at in batch.starts.items()), exc
                )
                self._rewind(consumer, [batch, *self._queue])
                return
            self.failures = 0
            self._commit_soon(consumer, batch.ends)

    def _rewind(self, consumer: AIOKafkaConsumer, unwritten: Sequence[_Prepared[E]]) -> None:
        """Drop the failed batch and those queued behind it, and rewind each partition to
        the earliest of their starts."""
        rewound = _earliest(batch.starts for batch in unwritten)
        self._queue.clear()
        _seek(consumer, rewound)
        self._rewound = rewound
        self._room.set()

    def _commit_soon(self, consumer: AIOKafkaConsumer, ends: Offsets) -> None:
        """Commit a written batch's offsets without holding up the next write.

        One commit is in flight at a time and each carries every offset written since the
        last, so commits stay in order and the next batch's transaction runs meanwhile.
        """
        for tp, offset in ends.items():
            self._written[tp] = max(offset, self._written.get(tp, 0))
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_written(consumer))

    async def _commit_written(self, consumer: AIOKafkaConsumer) -> None:
        with self._in_flight():
            while self._written:
                offsets, self._written = self._written, {}
                try:
                    await consumer.commit(offsets)
                except Exception as exc:
                    # A rebalance, a shutdown or the broker: whoever reads these partitions
                    # next replays from the last commit and the stores dedupe by vote_id.
                    log.warning("offset commit failed (%r); batches will be replayed", exc)


def _merged(batches: Sequence[_Prepared[E]]) -> _Prepared[E]:
    """Consecutive batches as one: their events in order, the offsets they span."""
    if len(batches) == 1:
        return batches[0]
    ends: Offsets = {}
    for batch in batches:
        for tp, at in batch.ends.items():
            ends[tp] = max(at, ends.get(tp, at))
    starts = _earliest(batch.starts for batch in batches)
    return _Prepared([e for batch in batches for e in batch.events], starts, ends)


def _earliest(offsets: Iterable[Offsets]) -> Offsets:
    """Each partition's lowest offset among several batches: where replaying them starts."""
    earliest: Offsets = {}
    for starts in offsets:
        for tp, at in starts.items():
            earliest[tp] = min(at, earliest.get(tp, at))
    return earliest


def offset_range(records: Sequence[ConsumerRecord[Any, Any]]) -> tuple[Offsets, Offsets]:
    """Each partition's first offset in the batch (where a replay starts) and the offset
    after its last (what committing the batch stores). A fetch returns each partition's
    records as one run in offset order, so only the ends of each run are looked at."""
    starts: Offsets = {}
    ends: Offsets = {}
    for (topic, partition), run in groupby(records, _position):
        tp = TopicPartition(topic, partition)
        first = next(run)
        tail = deque(run, maxlen=1)  # noqa: B031 (the rest of the run, read once, after its first)
        last = tail[0] if tail else first
        starts[tp] = min(first.offset, starts.get(tp, first.offset))
        ends[tp] = max(last.offset + 1, ends.get(tp, 0))
    return starts, ends


def _seek(consumer: AIOKafkaConsumer, offsets: Offsets) -> None:
    for tp, offset in offsets.items():
        try:
            consumer.seek(tp, offset)
        except IllegalStateError:
            # No longer ours after a rebalance: the new owner starts from the last commit.
            log.info("not rewinding %s: no longer assigned", tp)
