"""How far consumer groups are behind, seen from outside the groups.

Used to call results final and to refuse a prize draw while any vote received before the
close is still on its way: committed offsets are compared with offsets read from the
topics, never guessed from a sleep.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

# A consumer group and the topic it reads.
Pair = tuple[str, str]


def _key(pair: Pair) -> str:
    return f"{pair[0]}/{pair[1]}"


class PipelineProbe:
    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._built = False
        # Per moment: the decider's topic's end offsets when the moment was first asked
        # about, then (once the decider had passed them) the recorder's topic's.
        self._decider_ends: dict[Hashable, dict[TopicPartition, int]] = {}
        self._recorder_ends: dict[Hashable, dict[TopicPartition, int]] = {}

    async def start(self) -> None:
        # aiokafka clients bind to the running loop, so they are built here, not in __init__.
        self._admin = AIOKafkaAdminClient(**self._options, request_timeout_ms=5_000)
        self._offsets = AIOKafkaConsumer(
            **self._options, enable_auto_commit=False, request_timeout_ms=5_000
        )
        self._built = True
        await self._admin.start()
        await self._offsets.start()

    async def stop(self) -> None:
        """Close what start opened; safe before start and after a start that failed."""
        if self._built:
            self._built = False
            await self._offsets.stop()
            await self._admin.close()

    async def ends(self, topic: str) -> dict[TopicPartition, int]:
        """Each partition's end offset: where the next record of `topic` will go."""
        ends: dict[TopicPartition, int] = await self._offsets.end_offsets(
            await self._partitions(topic)
        )
        return ends

    async def lag(self, group: str, topic: str) -> dict[int, int]:
        """Records of `topic` not yet committed by `group`, per partition."""
        behind = await self._behind(group, await self.ends(topic))
        return {tp.partition: n for tp, n in behind.items()}

    async def total_lag(self, pairs: list[Pair]) -> dict[str, int]:
        """Lag summed over partitions, keyed "group/topic"."""
        return {_key((g, t)): sum((await self.lag(g, t)).values()) for g, t in pairs}

    async def left_through(self, moment: Hashable, decider: Pair, recorder: Pair) -> dict[str, int]:
        """What is still on its way of the records the decider's topic held when `moment`
        (a close) was first asked about, keyed "group/topic"; all zero once the decider has
        committed past them and the recorder past every decision published by then.

        Asked first once the close's votes are all in Kafka (the edge gives up on a publish
        within its timeout, below the close's grace of 5 s), this covers every vote
        received before the close. Unlike lag it has a fixed end: votes for other polls
        arriving meanwhile do not hold it back, so a busy platform still gets its draw
        and its final results.
        """
        recorder_ends = self._recorder_ends.get(moment)
        if recorder_ends is None:
            decider_ends = self._decider_ends.get(moment)
            if decider_ends is None:
                decider_ends = self._decider_ends[moment] = await self.ends(decider[1])
            undecided = sum((await self._behind(decider[0], decider_ends)).values())
            if undecided:
                return {
                    _key(decider): undecided,
                    _key(recorder): sum((await self.lag(*recorder)).values()),
                }
            # Every decision on those records is published (offsets are committed only
            # after it): the recorder's topic's end now bounds them all.
            recorder_ends = self._recorder_ends[moment] = await self.ends(recorder[1])
            self._decider_ends.pop(moment, None)  # a concurrent call may have gone first
        unrecorded = sum((await self._behind(recorder[0], recorder_ends)).values())
        return {_key(decider): 0, _key(recorder): unrecorded}

    async def _behind(
        self, group: str, targets: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Per partition, how far `group`'s committed offset is short of `targets`."""
        partitions = list(targets)
        committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        result: dict[TopicPartition, int] = {}
        for tp in partitions:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            result[tp] = max(0, targets[tp] - done)
        return result

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        ids = self._offsets.partitions_for_topic(topic)
        if not ids:
            await self._offsets._client.force_metadata_update()  # topic created after start
            ids = self._offsets.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(ids)]
