"""What a results document says, and how long votes took to be counted: pure functions
of the counts, the poll, the votes and the clock."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.catalog import CLOSE_GRACE, Poll, PollState
from shared.events import format_utc


def may_become_final(poll: Poll, now: datetime) -> bool:
    return poll.state_at(now) is PollState.CLOSED and now >= poll.closes_at + CLOSE_GRACE


def results_document(
    poll: Poll, counts: dict[str, int], as_of: datetime, *, final: bool
) -> dict[str, Any]:
    """The public results: every option of the poll present, even at zero."""
    shown = {option: counts.get(option, 0) for option in poll.options}
    return {
        "poll_id": poll.id,
        "counts": shown,
        "total": sum(shown.values()),
        "as_of": format_utc(as_of),
        "final": final,
    }


def results_visible(poll: Poll, now: datetime, *, staff: bool) -> bool:
    """`after_close` polls hide results from the public until the close."""
    if staff or poll.results == "live":
        return True
    return poll.state_at(now) is PollState.CLOSED


def delay_histogram(
    received: Iterable[datetime], now: datetime, bounds: Sequence[float]
) -> tuple[list[int], float]:
    """How many votes were counted within each bound (in seconds) of being received,
    cumulative as Prometheus buckets are, and the sum of the delays: what observing each
    vote's delay would add, for a whole batch in one sort. A vote received "after" now
    (clock skew between hosts) counts as a delay of 0. The times are sorted as they are,
    not as numbers: a batch arrives nearly in order, which the sort finds in one pass,
    and turning each time into a number cost twice what the rest does."""
    times = sorted(received)
    within = [len(times) - bisect_left(times, now - timedelta(seconds=b)) for b in bounds]
    past = bisect_right(times, now)
    return within, sum(map(now.__sub__, times[:past]), timedelta()).total_seconds()
