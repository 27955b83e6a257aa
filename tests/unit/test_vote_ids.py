"""Vote ids: valid UUIDs in time order, for the stores' primary-key indexes."""

from __future__ import annotations

import time
import uuid

from shared.events import new_vote_id


def test_a_vote_id_is_a_version_7_uuid_of_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    vote_id = new_vote_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(vote_id)
    assert str(parsed) == vote_id
    assert parsed.version == 7
    assert before <= parsed.int >> 80 <= after


def test_ids_made_one_after_another_are_distinct_and_in_order() -> None:
    ids = [new_vote_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_ids_made_fast_do_not_run_ahead_of_the_clock() -> None:
    # Ordering within a millisecond comes from a counter, not from borrowing later
    # milliseconds: the time in an id stays the time it was made.
    ids = [new_vote_id() for _ in range(100_000)]
    assert uuid.UUID(ids[-1]).int >> 80 <= time.time_ns() // 1_000_000
