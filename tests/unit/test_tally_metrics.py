"""Tally's count-delay histogram, observed a batch at a time, says what observing every
vote one by one with prometheus_client's Histogram says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from services.tally.consumer import DelayHistogram
from services.tally.rules import delay_histogram
from shared.metric_names import DELAY_BUCKETS

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
# Whole milliseconds: a delay exactly on a bucket edge falls in that bucket either way.
delays_ms = st.lists(st.integers(min_value=-5_000, max_value=400_000), max_size=200)


def _one_by_one(delays: list[float]) -> tuple[list[float], float]:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=DELAY_BUCKETS, registry=registry)
    for delay in delays:
        histogram.observe(max(0.0, delay))
    buckets = [registry.get_sample_value("h_bucket", {"le": str(b)}) for b in DELAY_BUCKETS]
    return [b or 0.0 for b in buckets], registry.get_sample_value("h_sum") or 0.0


@settings(max_examples=200)
@given(delays_ms)
def test_a_batch_fills_the_buckets_as_votes_observed_one_by_one(ms: list[int]) -> None:
    received = [NOW - timedelta(milliseconds=m) for m in ms]
    within, total = delay_histogram(received, NOW, DELAY_BUCKETS)
    buckets, expected_sum = _one_by_one([m / 1000 for m in ms])
    assert within == buckets
    assert total == pytest.approx(expected_sum, abs=1e-6 * max(1, len(ms)))


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(min_value=-5_000, max_value=400_000), st.booleans())))
def test_times_with_other_offsets_are_the_same_instants(votes: list[tuple[int, bool]]) -> None:
    # Received times are sorted as datetimes: an offset other than UTC must not move them.
    beijing = timezone(timedelta(hours=8))
    received = [
        (NOW - timedelta(milliseconds=m)).astimezone(beijing if shifted else UTC)
        for m, shifted in votes
    ]
    within, total = delay_histogram(received, NOW, DELAY_BUCKETS)
    buckets, expected_sum = _one_by_one([m / 1000 for m, _ in votes])
    assert within == buckets
    assert total == pytest.approx(expected_sum, abs=1e-6 * max(1, len(votes)))


def test_a_vote_received_after_now_counts_as_no_delay() -> None:
    within, total = delay_histogram([NOW + timedelta(seconds=3)], NOW, (0.05, 2.0))
    assert (within, total) == ([1, 1], 0.0)


def test_the_collector_exposes_a_histogram_with_the_usual_series() -> None:
    registry = CollectorRegistry()
    histogram = DelayHistogram("vote_count_delay_seconds", "delay", DELAY_BUCKETS)
    registry.register(histogram)
    histogram.observe_batch([NOW - timedelta(seconds=s) for s in (0.01, 1.5, 2.5)], NOW)
    histogram.observe_batch([NOW - timedelta(seconds=700)], NOW)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"vote_count_delay_seconds_{name}", labels)

    assert value("bucket", le="0.05") == 1
    assert value("bucket", le="2.0") == 2
    assert value("bucket", le="300.0") == 3
    assert value("bucket", le="+Inf") == value("count") == 4
    assert value("sum") == pytest.approx(0.01 + 1.5 + 2.5 + 700)
