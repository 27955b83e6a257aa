"""How far each consumer group is behind the end of a topic, seen from outside the group.

Used to call results final and to refuse a prize draw while any vote received before the
close is still on its way: committed offsets are compared with the topics' end offsets,
never guessed from a sleep.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


class PipelineProbe:
    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._built = False

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
        ends = await self.ends(topic)
        partitions = list(ends)
        committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        result: dict[int, int] = {}
        for tp in partitions:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            result[tp.partition] = max(0, ends[tp] - done)
        return result

    async def total_lag(self, pairs: list[tuple[str, str]]) -> dict[str, int]:
        """Lag summed over partitions, keyed "group/topic"."""
        return {f"{g}/{t}": sum((await self.lag(g, t)).values()) for g, t in pairs}

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        ids = self._offsets.partitions_for_topic(topic)
        if not ids:
            await self._offsets._client.force_metadata_update()  # topic created after start
            ids = self._offsets.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, p) for p in sorted(ids)]
