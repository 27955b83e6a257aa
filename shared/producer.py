"""A producer that stays usable across broker restarts.

Sends wait for every in-sync replica (`acks=all`) with idempotence on. aiokafka's sender
task stops for good when the broker answers OutOfOrderSequenceNumber or ProducerFenced -
which happens after batches expired while the broker was restarting - and every later
send then fails. Those sends were reported as failures to their callers (a voter got a
503, a consumer batch was rewound), so nothing was claimed: the producer is rebuilt with
a fresh producer id and sequences start again from zero.

A send abandoned by its caller (the edge's deadline passed and the voter was told 503,
"nothing was stored") must not reach the log later: aiokafka keeps a batch whose
partition leader is known but unreachable and sends it when the broker returns. So a
send that is cancelled or times out discards the whole producer without flushing it:
every record not yet acknowledged fails with it (their callers are told so), and the
next send builds a new producer. A record the broker appended but whose acknowledgement
was still on its way when the deadline passed cannot be recalled; that window is the
time between the broker's append and its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

log = logging.getLogger(__name__)

_FATAL = (OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId, InvalidProducerEpoch)


class ReliableProducer:
    def __init__(
        self,
        options: dict[str, Any],
        *,
        client_id: str,
        request_timeout_ms: int,
        linger_ms: int = 2,
    ) -> None:
        self._options = {
            **options,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": request_timeout_ms,
            "retry_backoff_ms": 100,
        }
        self._producer: AIOKafkaProducer | None = None
        self._rebuilding = asyncio.Lock()
        self._discarding: set[asyncio.Task[None]] = set()
        self.rebuilds = 0
        self.discards = 0

    async def start(self) -> None:
        self._producer = await self._build()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._close(self._producer)
            self._producer = None
        if self._discarding:
            await asyncio.gather(*self._discarding, return_exceptions=True)

    async def _build(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self._options)
        await producer.start()
        return producer

    @staticmethod
    async def _close(producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await producer.stop()

    def _broken(self, producer: AIOKafkaProducer) -> bool:
        sender = getattr(producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        return task is not None and task.done()

    async def _current(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is None or self._broken(producer):
            producer = await self._rebuild(producer)
        return producer

    async def _rebuild(self, broken: AIOKafkaProducer | None) -> AIOKafkaProducer:
        async with self._rebuilding:
            if self._producer is not broken and self._producer is not None:
                return self._producer  # another sender rebuilt it meanwhile
            if broken is not None:
                log.warning("the Kafka producer stopped; starting a new one")
                await self._close(broken)
            self._producer = None
            self._producer = await self._build()
            self.rebuilds += 1
            return self._producer

    def _discard(self, producer: AIOKafkaProducer) -> None:
        """Drop the producer and every record it still holds, without sending them."""
        if self._producer is producer:
            self._producer = None
        self.discards += 1
        producer._message_accumulator.fail_all(KafkaTimeoutError("send abandoned"))
        task = asyncio.ensure_future(self._abort(producer))
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    @staticmethod
    async def _abort(producer: AIOKafkaProducer) -> None:
        # producer.stop() would flush, i.e. deliver what the callers gave up on.
        producer._closed = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await producer._sender.close()
        with contextlib.suppress(Exception):
            await producer.client.close()

    async def send_many(self, records: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Send (topic, value, key) records and wait until the broker has every one."""
        producer = await self._current()
        try:
            futures = [await producer.send(t, value, key=key) for t, value, key in records]
            await asyncio.gather(*futures)
        except BaseException as exc:
            await self._after_failure(producer, exc)
            raise

    async def send(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Send one record and wait until the broker has it: send_many without the gather."""
        producer = await self._current()
        try:
            await (await producer.send(topic, value, key=key))
        except BaseException as exc:
            await self._after_failure(producer, exc)
            raise

    async def _after_failure(self, producer: AIOKafkaProducer, exc: BaseException) -> None:
        """An abandoned send drops the producer unsent; a dead sender gets a new one."""
        if isinstance(exc, asyncio.CancelledError | TimeoutError):
            self._discard(producer)
        elif isinstance(exc, _FATAL) or (isinstance(exc, KafkaError) and self._broken(producer)):
            await self._rebuild(producer)

    async def ping(self) -> bool:
        """True when the broker answers a metadata request."""
        producer = await self._current()
        return bool(await producer.client.force_metadata_update())
