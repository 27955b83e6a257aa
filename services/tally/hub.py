"""One shared read of the counts per interval, fanned out to every viewer.

However many viewers are connected (GET or Server-Sent Events), the database sees one
query per interval; a poll's stream gets at most one update per interval, and only when
its counts changed. Each update is encoded once for all its viewers, and viewers wait on
an event of their poll's, with no timer of their own: the hub sends every viewer a
keep-alive comment every KEEP_ALIVE seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from services.tally.rules import may_become_final, results_document
from shared.catalog import Catalog

log = logging.getLogger(__name__)

SSE_CLIENTS = Gauge("sse_clients", "Connected results-stream viewers", ["poll"])

# Proxies close a connection that stays silent for long; a comment line keeps it open.
KEEP_ALIVE = 15.0
_KEEP_ALIVE_FRAME = b": keep-alive\n\n"

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
        max_viewers: int = 10_000,
    ) -> None:
        self.catalog = catalog
        self._read_counts = read_counts
        self._is_drained = is_drained
        self._clock = clock
        self.interval = interval
        self._documents: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._final: set[str] = set()
        # Each poll's current document as a Server-Sent Events frame, and the event its
        # viewers wait on, replaced (and set) when there is something to send them.
        self._frames: dict[str, bytes] = {}
        self._wakes = {poll.id: asyncio.Event() for poll in catalog.polls}
        self._beat = time.monotonic()
        # Each stream holds about 26 KiB and a connection: past this many, viewers are
        # told to read the results every few seconds instead (see has_room).
        self.max_viewers = max_viewers
        self.viewers = 0
        self.reads = 0

    def has_room(self) -> bool:
        """Whether one more stream may open. A soft bound: streams that are admitted
        together and start after this check may pass it by a few."""
        return self.viewers < self.max_viewers

    def document(self, poll_id: str) -> dict[str, Any] | None:
        return self._documents.get(poll_id)

    async def refresh(self) -> None:
        now = self._clock()
        await self._settle_final(now)
        # Counts are read after the drain check, so a document called final holds every
        # vote that was counted when the pipeline was seen drained.
        counts = await self._read_counts()
        self.reads += 1
        for poll in self.catalog.polls:
            poll_counts = counts.get(poll.id, {})
            final = poll.id in self._final
            known = self._documents.get(poll.id)
            if known is None or self._counts.get(poll.id) != poll_counts or known["final"] != final:
                doc = results_document(poll, poll_counts, now, final=final)
                self._documents[poll.id] = doc
                self._counts[poll.id] = poll_counts
                data = json.dumps(doc, ensure_ascii=False)
                self._frames[poll.id] = f"event: results\ndata: {data}\n\n".encode()
                self._wake(poll.id)

    def _wake(self, poll_id: str) -> None:
        woken, self._wakes[poll_id] = self._wakes[poll_id], asyncio.Event()
        woken.set()

    def _keep_alive(self) -> None:
        if time.monotonic() - self._beat >= KEEP_ALIVE:
            self._beat = time.monotonic()
            for poll_id in self._wakes:
                self._wake(poll_id)

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
            self._keep_alive()
            await asyncio.sleep(self.interval)

    async def stream(self, poll_id: str) -> AsyncGenerator[bytes, None]:
        """Server-Sent Events: the current results, then each change, with keep-alives."""
        SSE_CLIENTS.labels(poll_id).inc()
        self.viewers += 1
        try:
            last: bytes | None = None
            while True:
                # The event first: a change made after the frame is read still wakes us.
                wake = self._wakes[poll_id]
                frame = self._frames.get(poll_id)
                if frame is not None and frame is not last:
                    last = frame
                    yield frame
                    continue
                await wake.wait()
                if self._frames.get(poll_id) is last:  # woken for the keep-alive
                    yield _KEEP_ALIVE_FRAME
        finally:
            self.viewers -= 1
            SSE_CLIENTS.labels(poll_id).dec()
