"""What a results document says: pure functions of the counts, the poll and the clock."""

from __future__ import annotations

from datetime import datetime
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
