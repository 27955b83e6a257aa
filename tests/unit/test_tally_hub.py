"""The results hub calls a closed poll's results final once the votes before its close are
through the pipeline, asking about the latest close among the polls waiting; it sends a
poll's viewers each change of that poll, and every viewer a keep-alive when quiet."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.tally import hub as hub_module
from services.tally.hub import ResultsHub
from shared.catalog import parse_catalog

EARLY = datetime(2022, 1, 8, 1, 0, tzinfo=UTC)
LATE = EARLY + timedelta(hours=2)
CATALOG = f"""
polls:
  - id: early
    title: Early
    options: [excellent, good]
    opens_at: {(EARLY - timedelta(days=3)).isoformat()}
    closes_at: {EARLY.isoformat()}
  - id: late
    title: Late
    options: [excellent, good]
    opens_at: {(EARLY - timedelta(days=3)).isoformat()}
    closes_at: {LATE.isoformat()}
"""


async def no_counts() -> dict[str, dict[str, int]]:
    return {}


def finals(hub: ResultsHub) -> list[bool]:
    docs = [hub.document(poll) for poll in ("early", "late")]
    return [bool(doc is not None and doc["final"]) for doc in docs]


async def test_final_waits_for_the_votes_before_the_latest_close_among_those_waiting() -> None:
    asked: list[datetime] = []
    through = False

    async def drained(closed_at: datetime) -> bool:
        asked.append(closed_at)
        return through

    clock = [LATE - timedelta(minutes=1)]
    hub = ResultsHub(parse_catalog(CATALOG), no_counts, drained, lambda: clock[0])

    # Only the early poll has closed (and its grace passed): asked about its close.
    await hub.refresh()
    assert asked == [EARLY]
    assert finals(hub) == [False, False]

    # Both closed: the later close covers the votes before both.
    clock[0] = LATE + timedelta(minutes=1)
    through = True
    await hub.refresh()
    assert asked[-1] == LATE
    assert finals(hub) == [True, True]


class Viewer:
    """A results-stream viewer reading in a task of its own, as a connection would."""

    def __init__(self, hub: ResultsHub, poll_id: str) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.create_task(self._read(hub, poll_id))

    async def _read(self, hub: ResultsHub, poll_id: str) -> None:
        async for frame in hub.stream(poll_id):
            await self.frames.put(frame)

    async def next(self, within: float = 1.0) -> bytes:
        async with asyncio.timeout(within):
            return await self.frames.get()

    async def leave(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def counts_in(frame: bytes) -> dict[str, int]:
    assert frame.startswith(b"event: results\ndata: ") and frame.endswith(b"\n\n"), frame
    counts: dict[str, int] = json.loads(frame.split(b"data: ", 1)[1])["counts"]
    return counts


async def not_drained(closed_at: datetime) -> bool:
    return False


async def test_a_viewer_gets_each_change_of_its_poll_and_nothing_for_another() -> None:
    counts: dict[str, dict[str, int]] = {"early": {"good": 1}, "late": {"good": 1}}

    async def read_counts() -> dict[str, dict[str, int]]:
        return {poll: dict(c) for poll, c in counts.items()}

    hub = ResultsHub(parse_catalog(CATALOG), read_counts, not_drained, lambda: EARLY)
    await hub.refresh()
    viewer = Viewer(hub, "late")
    try:
        assert counts_in(await viewer.next())["good"] == 1

        counts["early"]["good"] = 2  # another poll's change: nothing for this viewer
        await hub.refresh()
        with pytest.raises(TimeoutError):
            await viewer.next(within=0.2)

        counts["late"]["good"] = 5
        await hub.refresh()
        assert counts_in(await viewer.next())["good"] == 5
    finally:
        await viewer.leave()


async def test_a_quiet_stream_gets_a_keep_alive_from_the_hub(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "KEEP_ALIVE", 0.2)
    hub = ResultsHub(parse_catalog(CATALOG), no_counts, not_drained, lambda: EARLY)
    hub.interval = 0.05
    running = asyncio.create_task(hub.run())
    viewer = Viewer(hub, "early")
    try:
        assert counts_in(await viewer.next()) == {"excellent": 0, "good": 0}
        assert await viewer.next() == b": keep-alive\n\n"
        assert await viewer.next() == b": keep-alive\n\n"
    finally:
        await viewer.leave()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
