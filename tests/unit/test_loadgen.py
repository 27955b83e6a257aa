"""The load generator's bookkeeping: the schedule, the mix, the plan and the histograms."""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.http1 import build_request
from bench.loadgen import (
    BURST_ADDRESS,
    NAT_ADDRESS,
    NO_ANSWER,
    Kind,
    LatencyBook,
    Mix,
    Schedule,
    assign_kinds,
    plan_votes,
    to_micros,
    wrong_answer,
)
from shared.captcha import ALPHABET, expected_answer, issue

# ---------------------------------------------------------------- schedule


def test_schedule_is_bounded_by_count_or_duration_whichever_is_smaller() -> None:
    assert len(Schedule(100, count=50)) == 50
    assert len(Schedule(100, duration=10)) == 1000
    assert len(Schedule(100, count=50, duration=10)) == 50
    assert len(Schedule(100, count=5000, duration=10)) == 1000


def test_intended_instants_are_on_a_fixed_grid() -> None:
    schedule = Schedule(250, count=5)
    assert list(schedule) == [0.0, 0.004, 0.008, 0.012, 0.016]
    assert schedule.intended(3) == 0.012


def test_an_instant_outside_the_run_is_an_error() -> None:
    with pytest.raises(IndexError):
        Schedule(10, count=3).intended(3)


@pytest.mark.parametrize(
    ("rate", "count", "duration"),
    [(0, 10, None), (-1, 10, None), (float("inf"), 10, None), (10, None, None), (10, -1, None)],
)
def test_invalid_schedules_are_refused(
    rate: float, count: int | None, duration: float | None
) -> None:
    with pytest.raises(ValueError, match=r"rate|bound|count"):
        Schedule(rate, count, duration)


@given(
    rate=st.floats(min_value=0.5, max_value=50_000),
    duration=st.floats(min_value=0, max_value=60),
)
def test_every_vote_is_due_before_the_end_and_none_is_left_out(
    rate: float, duration: float
) -> None:
    schedule = Schedule(rate, duration=duration)
    n = len(schedule)
    if n:
        assert schedule.intended(n - 1) < duration + 1e-6
    # The next instant would fall at or after the end.
    assert n / rate >= duration - 1e-6


@given(rate=st.floats(min_value=0.5, max_value=50_000), count=st.integers(0, 500))
def test_instants_strictly_increase_at_the_rate(rate: float, count: int) -> None:
    instants = list(Schedule(rate, count=count))
    assert len(instants) == count
    gaps = [b - a for a, b in itertools.pairwise(instants)]
    assert all(gap == pytest.approx(1 / rate) for gap in gaps)


# ---------------------------------------------------------------- mix and plan


def test_kinds_follow_the_mix_shares() -> None:
    kinds = Counter(assign_kinds(200_000, Mix(), random.Random(7)))
    shares = Mix().shares()
    total = sum(shares.values())
    for kind, share in shares.items():
        assert kinds[kind] / 200_000 == pytest.approx(share / total, abs=0.01)


def test_bursts_come_in_runs_of_burst_size() -> None:
    mix = Mix(valid=0.5, repeat=0, wrong_captcha=0, burst=0.5, nat=0, burst_size=7)
    kinds = assign_kinds(10_000, mix, random.Random(3))
    runs: list[int] = []
    for kind in kinds:
        if kind is Kind.BURST:
            if runs and runs[-1] > 0:
                runs[-1] += 1
            else:
                runs.append(1)
        else:
            runs.append(0)
    burst_runs = [n for n in runs if n]
    # Adjacent bursts merge into longer runs; every run is whole bursts except the last.
    assert all(n % 7 == 0 for n in burst_runs[:-1])


def test_a_mix_without_shares_is_refused() -> None:
    with pytest.raises(ValueError, match="mix"):
        Mix(valid=0, repeat=0, wrong_captcha=0, burst=0, nat=0)


def test_repeats_reuse_an_earlier_voter_and_fresh_kinds_bring_a_new_one() -> None:
    plan, voters = plan_votes(5_000, Mix(), random.Random(11))
    seen: set[int] = set()
    for vote in plan:
        if vote.kind is Kind.REPEAT:
            assert vote.voter in seen
        else:
            assert vote.voter == len(seen)
            seen.add(vote.voter)
    assert voters == len(seen)
    assert plan[0].kind is not Kind.REPEAT


def test_addresses_match_the_kind() -> None:
    plan, _ = plan_votes(5_000, Mix(), random.Random(5))
    homes: dict[int, str] = {}
    for vote in plan:
        if vote.kind is Kind.NAT:
            assert vote.address == NAT_ADDRESS
        elif vote.kind is Kind.BURST:
            assert vote.address == BURST_ADDRESS
        elif vote.kind is Kind.REPEAT:
            assert vote.address == homes[vote.voter]
        else:
            assert ipaddress.ip_address(vote.address) in ipaddress.ip_network("10.0.0.0/8")
        homes.setdefault(vote.voter, vote.address)


def test_only_valid_mix_plans_only_fresh_valid_votes() -> None:
    plan, voters = plan_votes(300, Mix.only_valid(), random.Random(1))
    assert {vote.kind for vote in plan} == {Kind.VALID}
    assert voters == 300


def test_a_wrong_answer_is_well_formed_and_wrong() -> None:
    secret = "s" * 40
    for _ in range(50):
        answer = expected_answer(secret, issue(secret, datetime.now(UTC)))
        wrong = wrong_answer(answer)
        assert wrong != answer
        assert len(wrong) == len(answer)
        assert set(wrong) <= set(ALPHABET)


# ---------------------------------------------------------------- histograms


def test_percentiles_come_from_the_recorded_latencies() -> None:
    book = LatencyBook()
    for ms in range(1, 1001):
        book.record(ms / 1000, 202, "valid")
    pct = book.percentiles_ms()
    assert pct[50.0] == pytest.approx(500, rel=0.01)
    assert pct[90.0] == pytest.approx(900, rel=0.01)
    assert pct[99.0] == pytest.approx(990, rel=0.01)
    assert pct[99.9] == pytest.approx(999, rel=0.01)
    assert book.max_ms() == pytest.approx(1000, rel=0.01)


def test_unanswered_requests_are_counted_but_not_timed() -> None:
    book = LatencyBook()
    book.record(0.010, 202, "valid")
    book.record(10.0, NO_ANSWER, "valid", "no_answer: timed out")
    book.record(0.020, 503, "valid", "broker_unavailable")
    book.record(0.005, 401, "repeat", "invalid_token")
    assert book.count == 4
    assert book.answered == 3
    assert book.histogram.get_total_count() == 3
    assert book.errors() == 2
    assert book.error_fraction() == 0.5
    assert book.statuses == {202: 1, NO_ANSWER: 1, 503: 1, 401: 1}
    assert book.by_kind[("repeat", 401)] == 1
    assert book.codes["broker_unavailable"] == 1


def test_an_empty_book_has_no_percentiles() -> None:
    book = LatencyBook()
    assert book.percentiles_ms() == {}
    assert book.error_fraction() == 0.0


def test_merging_books_adds_counts_and_histograms() -> None:
    a, b = LatencyBook(), LatencyBook()
    a.record(0.001, 202)
    b.record(0.002, 202)
    b.record(0.003, 500)
    a.merge(b)
    assert a.statuses == {202: 2, 500: 1}
    assert a.histogram.get_total_count() == 3


@given(st.floats(min_value=-1, max_value=1e6, allow_nan=False))
def test_latencies_are_clamped_into_the_histogram_range(seconds: float) -> None:
    micros = to_micros(seconds)
    assert 1 <= micros <= 60_000_000
    LatencyBook().record(seconds, 202)


# ---------------------------------------------------------------- the wire


def test_requests_carry_their_length_and_headers() -> None:
    raw = build_request(
        "POST", "/api/v1/x", "127.0.0.1:8081", {"x-forwarded-for": "10.0.0.1"}, b"{}"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /api/v1/x HTTP/1.1"
    assert "host: 127.0.0.1:8081" in lines
    assert "x-forwarded-for: 10.0.0.1" in lines
    assert "content-length: 2" in lines
    assert body == b"{}"
