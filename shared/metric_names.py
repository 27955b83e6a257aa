"""The Prometheus metric names, labels and buckets the services expose.

This module is the contract of contract section 9 in code: services build their
collectors from these constants, and the tests check that every alert rule and every
dashboard query uses only names listed here. Renaming a metric is a breaking change for
every dashboard and alert that reads it, so it happens here first, on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

SERVICES: Final = frozenset({"vote_ingest", "antifraud", "tally", "lottery"})
DEPENDENCIES: Final = frozenset({"kafka", "postgres"})
CONSUMER_GROUPS: Final = frozenset({"antifraud", "tally", "lottery"})
TOPICS: Final = frozenset(
    {"votes.submitted", "votes.accepted", "votes.rejected", "votes.deadletter"}
)
VERDICTS: Final = frozenset({"accepted", "rejected"})

# Every service.
HTTP_REQUEST_DURATION_SECONDS: Final = "http_request_duration_seconds"
BUILD_INFO: Final = "build_info"
DEPENDENCY_UP: Final = "dependency_up"

# vote_ingest.
VOTES_SUBMITTED_TOTAL: Final = "votes_submitted_total"
CAPTCHAS_ISSUED_TOTAL: Final = "captchas_issued_total"
CAPTCHAS_SPOKEN_TOTAL: Final = "captchas_spoken_total"
VOTES_SUBMIT_FAILED_TOTAL: Final = "votes_submit_failed_total"

# antifraud.
VOTES_DECIDED_TOTAL: Final = "votes_decided_total"
VOTE_DECISION_DELAY_SECONDS: Final = "vote_decision_delay_seconds"
VOTES_DEADLETTERED_TOTAL: Final = "votes_deadlettered_total"

# antifraud, tally and lottery: one series per consumer group, topic and partition.
KAFKA_CONSUMER_LAG_MESSAGES: Final = "kafka_consumer_lag_messages"

# tally.
VOTES_COUNTED_TOTAL: Final = "votes_counted_total"
VOTE_COUNT_DELAY_SECONDS: Final = "vote_count_delay_seconds"
SSE_CLIENTS: Final = "sse_clients"

# lottery.
LOTTERY_ENTRIES: Final = "lottery_entries"
LOTTERY_DRAWS_TOTAL: Final = "lottery_draws_total"
# Per poll awaiting its draw: votes received before the close still in the pipeline.
LOTTERY_DRAW_VOTES_LEFT: Final = "lottery_draw_votes_left"

# The process collector of prometheus_client (Linux).
PROCESS_METRICS: Final = frozenset(
    {
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    }
)

# Written by Prometheus itself for every target it scrapes.
SCRAPE_METRICS: Final = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

HISTOGRAMS: Final = frozenset(
    {HTTP_REQUEST_DURATION_SECONDS, VOTE_DECISION_DELAY_SECONDS, VOTE_COUNT_DELAY_SECONDS}
)

METRICS: Final = frozenset(
    {
        HTTP_REQUEST_DURATION_SECONDS,
        BUILD_INFO,
        DEPENDENCY_UP,
        VOTES_SUBMITTED_TOTAL,
        CAPTCHAS_ISSUED_TOTAL,
        CAPTCHAS_SPOKEN_TOTAL,
        VOTES_SUBMIT_FAILED_TOTAL,
        VOTES_DECIDED_TOTAL,
        VOTE_DECISION_DELAY_SECONDS,
        VOTES_DEADLETTERED_TOTAL,
        KAFKA_CONSUMER_LAG_MESSAGES,
        VOTES_COUNTED_TOTAL,
        VOTE_COUNT_DELAY_SECONDS,
        SSE_CLIENTS,
        LOTTERY_ENTRIES,
        LOTTERY_DRAWS_TOTAL,
        LOTTERY_DRAW_VOTES_LEFT,
    }
)

# The labels each metric carries, in this order. Prometheus adds `job` and `instance`;
# histograms add `le` to their _bucket series. Values are bounded: poll ids come from the
# catalog, never a voter id or an IP.
LABELS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        HTTP_REQUEST_DURATION_SECONDS: ("service", "route", "method", "status"),
        BUILD_INFO: ("service", "version"),
        DEPENDENCY_UP: ("service", "dependency"),
        VOTES_SUBMITTED_TOTAL: ("poll",),
        CAPTCHAS_ISSUED_TOTAL: (),
        CAPTCHAS_SPOKEN_TOTAL: (),
        VOTES_SUBMIT_FAILED_TOTAL: ("poll", "code"),
        VOTES_DECIDED_TOTAL: ("poll", "verdict", "reason"),
        VOTE_DECISION_DELAY_SECONDS: (),
        VOTES_DEADLETTERED_TOTAL: ("group", "topic"),
        KAFKA_CONSUMER_LAG_MESSAGES: ("group", "topic", "partition"),
        VOTES_COUNTED_TOTAL: ("poll", "choice"),
        VOTE_COUNT_DELAY_SECONDS: (),
        SSE_CLIENTS: ("poll",),
        LOTTERY_ENTRIES: ("poll",),
        LOTTERY_DRAWS_TOTAL: ("poll",),
        LOTTERY_DRAW_VOTES_LEFT: ("poll",),
    }
)
TARGET_LABELS: Final = frozenset({"job", "instance"})

# Buckets put the objectives (decided within 1 s, counted within 2 s) on bucket edges,
# so the SLIs are exact counts rather than interpolations.
HTTP_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELAY_BUCKETS: Final = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
DECISION_OBJECTIVE_SECONDS: Final = 1.0
COUNT_OBJECTIVE_SECONDS: Final = 2.0


def series_names(metric: str) -> frozenset[str]:
    """The names a scrape of `metric` yields: a histogram becomes _bucket/_count/_sum."""
    if metric in HISTOGRAMS:
        return frozenset({f"{metric}_bucket", f"{metric}_count", f"{metric}_sum"})
    return frozenset({metric})


def metric_of(series: str) -> str | None:
    """The contract metric a series name belongs to, or None for process/scrape series."""
    if series in METRICS:
        return series
    base, _, suffix = series.rpartition("_")
    if base in HISTOGRAMS and suffix in ("bucket", "count", "sum"):
        return base
    return None


def allowed_labels(series: str) -> frozenset[str]:
    """The label names a query may match or group on for `series`."""
    metric = metric_of(series)
    labels = set(TARGET_LABELS)
    if metric is not None:
        labels.update(LABELS[metric])
        if series == f"{metric}_bucket":
            labels.add("le")
    return frozenset(labels)


def queryable_names() -> frozenset[str]:
    """Every series name a dashboard or alert may read."""
    names: set[str] = set(PROCESS_METRICS | SCRAPE_METRICS)
    for metric in METRICS:
        names |= series_names(metric)
    return frozenset(names)


__all__ = [
    "BUILD_INFO",
    "CAPTCHAS_ISSUED_TOTAL",
    "CAPTCHAS_SPOKEN_TOTAL",
    "CONSUMER_GROUPS",
    "COUNT_OBJECTIVE_SECONDS",
    "DECISION_OBJECTIVE_SECONDS",
    "DELAY_BUCKETS",
    "DEPENDENCIES",
    "DEPENDENCY_UP",
    "HISTOGRAMS",
    "HTTP_DURATION_BUCKETS",
    "HTTP_REQUEST_DURATION_SECONDS",
    "KAFKA_CONSUMER_LAG_MESSAGES",
    "LABELS",
    "LOTTERY_DRAWS_TOTAL",
    "LOTTERY_ENTRIES",
    "METRICS",
    "PROCESS_METRICS",
    "SCRAPE_METRICS",
    "SERVICES",
    "SSE_CLIENTS",
    "TARGET_LABELS",
    "TOPICS",
    "VERDICTS",
    "VOTES_COUNTED_TOTAL",
    "VOTES_DEADLETTERED_TOTAL",
    "VOTES_DECIDED_TOTAL",
    "VOTES_SUBMITTED_TOTAL",
    "VOTES_SUBMIT_FAILED_TOTAL",
    "VOTE_COUNT_DELAY_SECONDS",
    "VOTE_DECISION_DELAY_SECONDS",
    "allowed_labels",
    "metric_of",
    "queryable_names",
    "series_names",
]
