"""The results hub calls a closed poll's results final once the votes before its close are
through the pipeline, asking about the latest close among the polls waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
