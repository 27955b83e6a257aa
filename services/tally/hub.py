"""One shared read of the counts per interval, fanned out to every viewer.

However many viewers are connected (GET or Server-Sent Events), the database sees one
query per interval; a poll's stream gets at most one update per interval, and only when
its counts changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from services.tally.rules import may_become_final, results_document
from shared.catalog import Catalog

log = logging.getLogger(__name__)

SSE_CLIENTS = Gauge("sse_clients", "Connected results-stream viewers", ["poll"])

ReadCounts = Callable[[], Awaitable[dict[str, dict[str, int]]]]
# Whether every vote received before a close has been decided and counted.
IsDrained = Callable[[datetime], Awaitable[bool]]


class ResultsHub:
    def __init__(
        self,
        catalog: Catalog,
        read_counts: ReadCounts,
        is_drained: IsDrained,
        clock: Callable[[], datetime],
        *,
        interval: float = 1.0,
    ) -> None:
        self.catalog = catalog
        self._read_counts = read_counts
        self._is_drained = is_drained
        self._clock = clock
        self.interval = interval
        self._documents: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._final: set[str] = set()
        self._changed = asyncio.Condition()
        self.reads = 0

    def document(self, poll_id: str) -> dict[str, Any] | None:
        return self._documents.get(poll_id)

    async def refresh(self) -> None:
        now = self._clock()
        await self._settle_final(now)
        # Counts are read after the drain check, so a document called final holds every
        # vote that was counted when the pipeline was seen drained.
        counts = await self._read_counts()
        self.reads += 1
        changed = False
        for poll in self.catalog.polls:
            poll_counts = counts.get(poll.id, {})
            final = poll.id in self._final
            known = self._documents.get(poll.id)
            if known is None or self._counts.get(poll.id) != poll_counts or known["final"] != final:
                doc = results_document(poll, poll_counts, now, final=final)
                self._documents[poll.id] = doc
                self._counts[poll.id] = poll_counts
                changed = True
        if changed:
            async with self._changed:
                self._changed.notify_all()

    async def _settle_final(self, now: datetime) -> None:
        waiting = [
            p for p in self.catalog.polls if p.id not in self._final and may_become_final(p, now)
        ]
        # The latest close among them: votes before it include the others' votes.
        if waiting and await self._is_drained(max(p.closes_at for p in waiting)):
            self._final.update(p.id for p in waiting)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("reading counts failed; viewers keep the last results")
            await asyncio.sleep(self.interval)

    async def stream(self, poll_id: str) -> AsyncIterator[str]:
        """Server-Sent Events: the current results, then each change, with keep-alives."""
        SSE_CLIENTS.labels(poll_id).inc()
        try:
            last: dict[str, Any] | None = None
            while True:
                doc = self._documents.get(poll_id)
                if doc is not None and doc is not last:
                    last = doc
                    yield f"event: results\ndata: {json.dumps(doc, ensure_ascii=False)}\n\n"
                try:
                    async with asyncio.timeout(15), self._changed:
                        await self._changed.wait()
                except TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            SSE_CLIENTS.labels(poll_id).dec()
