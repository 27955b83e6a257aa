"""When the lottery counts a day, takes entries, fixes its seed and may draw. No I/O.

Every judgement is a function of the poll and an instant: a vote's `received_at` for days,
the service's clock for entries and the draw, so a lagging consumer decides as a fast one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

from shared.catalog import CLOSE_GRACE, Poll, PollState
from shared.errors import Conflict, Forbidden


class LotteryState(StrEnum):
    OPEN = "open"
    AWAITING_DRAW = "awaiting_draw"
    DRAWN = "drawn"


def counts_toward_days(poll: Poll, received_at: datetime) -> bool:
    """A vote counts for the draw when it was received while the poll was open.

    The close instant itself is closed: 08:59:59.999 on the closing day counts, 09:00 does not.
    """
    return poll.state_at(received_at) is PollState.OPEN


def commitment_due(poll: Poll, now: datetime) -> bool:
    """The seed is fixed, and its commitment published, from the moment voting opens."""
    return poll.lottery is not None and poll.state_at(now) is not PollState.UPCOMING


def require_entries_open(poll: Poll, now: datetime) -> None:
    state = poll.state_at(now)
    if state is PollState.UPCOMING:
        raise Forbidden("entries open when voting opens", code="poll_not_open")
    if state is PollState.CLOSED:
        raise Forbidden("voting has closed; entries are no longer accepted", code="poll_closed")


def require_draw_time(poll: Poll, now: datetime) -> None:
    """The draw needs the close, plus the grace for votes still reaching Kafka."""
    if poll.state_at(now) is not PollState.CLOSED:
        raise Conflict("the draw happens after voting closes", code="poll_open")
    if now < poll.closes_at + CLOSE_GRACE:
        seconds = int(CLOSE_GRACE.total_seconds())
        raise Conflict(
            f"votes received just before the close may still be arriving; "
            f"retry {seconds} s after the close",
            code="poll_settling",
        )


def require_drained(left: Mapping[str, int]) -> None:
    """Refuse while any consumer of the pipeline has records left to decide or record."""
    if any(left.values()):
        raise Conflict(
            "votes received before the close are still being decided or recorded; retry shortly",
            code="pipeline_not_drained",
            extra={"left": dict(left)},
        )


def lottery_state(poll: Poll, now: datetime, *, drawn: bool) -> LotteryState:
    if drawn:
        return LotteryState.DRAWN
    if poll.state_at(now) is PollState.CLOSED:
        return LotteryState.AWAITING_DRAW
    return LotteryState.OPEN


def days_histogram(weights: Iterable[int]) -> dict[int, int]:
    """Entries by days voted, every count from 0 to the largest present (for a bar chart)."""
    counts = Counter(weights)
    top = max(counts, default=0)
    return {days: counts.get(days, 0) for days in range(top + 1)}
