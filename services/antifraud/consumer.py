"""Consumes votes.submitted: decide a batch in one transaction, publish, then commit.

A crash can fall between the database commit and the publish of the decisions. On the
replay those votes are already decided: their stored decisions are published again
(downstream consumers dedupe by vote_id), so no vote is silently lost.
"""

from __future__ import annotations

from collections import Counter as CounterOf
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from services.antifraud import store
from services.antifraud.rules import Decision
from shared.catalog import Catalog
from shared.consuming import BatchRunner, subscriber_options
from shared.events import (
    TOPIC_ACCEPTED,
    TOPIC_DEADLETTER,
    TOPIC_REJECTED,
    TOPIC_SUBMITTED,
    VoteSubmitted,
    format_utc,
)
from shared.metric_names import DELAY_BUCKETS
from shared.producer import ReliableProducer

GROUP = "antifraud"
# Each vote locks up to three keys (voter, subnet, captcha) for its batch's transaction;
# 1000 votes keep that within the lock table the server is configured for
# (max_locks_per_transaction) even with many replicas catching up at once, and spread
# each commit's flush over enough votes that it stops mattering.
MAX_RECORDS = 1000

VOTES_DECIDED = Counter("votes_decided_total", "Votes decided", ["poll", "verdict", "reason"])
DECISION_DELAY = Histogram(
    "vote_decision_delay_seconds",
    "From received_at to the decision",
    buckets=DELAY_BUCKETS,
)


@dataclass(frozen=True)
class Topics:
    """Where decisions go; tests point these at topics of their own."""

    submitted: str = TOPIC_SUBMITTED
    accepted: str = TOPIC_ACCEPTED
    rejected: str = TOPIC_REJECTED
    deadletter: str = TOPIC_DEADLETTER


# Encodes exactly what VoteAccepted / VoteRejected.model_dump_json() would write (same
# fields, order and escaping; times through format_utc) for a fraction of the CPU: a
# decision's fields were validated on the way in and are only copied out here.
_json = msgspec.json.Encoder()


def decision_event(
    decision: Decision, decided_at: datetime | str, topics: Topics
) -> tuple[str, bytes]:
    """The topic and value of a decision; ``decided_at`` may come already formatted."""
    decided = decided_at if isinstance(decided_at, str) else format_utc(decided_at)
    if decision.reason is None:
        assert decision.day is not None  # noqa: S101 - accepted decisions always carry a day
        accepted = {
            "vote_id": decision.vote_id,
            "poll_id": decision.poll_id,
            "choice": decision.choice,
            "voter_id": decision.voter_id,
            "day": decision.day,
            "received_at": format_utc(decision.received_at),
            "decided_at": decided,
        }
        return topics.accepted, _json.encode(accepted)
    rejected = {
        "vote_id": decision.vote_id,
        "poll_id": decision.poll_id,
        "voter_id": decision.voter_id,
        "reason": decision.reason.value,
        "received_at": format_utc(decision.received_at),
        "decided_at": decided,
    }
    return topics.rejected, _json.encode(rejected)


def _count(outcome: Sequence[store.Outcome], catalog: Catalog, now: datetime) -> None:
    labels: CounterOf[tuple[str, str, str]] = CounterOf()
    for item in outcome:
        if item.fresh:
            d = item.decision
            # Labels stay bounded: a poll id not in the catalog is reported as "unknown".
            poll = d.poll_id if catalog.get(d.poll_id) else "unknown"
            labels[(poll, d.verdict, d.reason or "")] += 1
            DECISION_DELAY.observe(max(0.0, (now - d.received_at).total_seconds()))
    for (poll, verdict, reason), n in labels.items():
        VOTES_DECIDED.labels(poll, verdict, reason).inc(n)


def attach(
    broker: KafkaBroker,
    pool: asyncpg.Pool,
    catalog: Catalog,
    captcha_secret: str,
    clock: Callable[[], datetime],
    *,
    topics: Topics = Topics(),
    group: str = GROUP,
    producer: ReliableProducer,
) -> object:
    async def handle(submissions: list[VoteSubmitted]) -> None:
        decided_at = clock()
        outcome = await store.decide_and_record(
            pool, submissions, catalog, captcha_secret, decided_at
        )
        stamp = format_utc(decided_at)
        await producer.send_many(
            (
                *decision_event(item.decision, stamp if item.fresh else item.decided_at, topics),
                item.decision.voter_id.encode(),
            )
            for item in outcome
        )
        _count(outcome, catalog, clock())

    runner = BatchRunner(producer, VoteSubmitted, group, handle, deadletter_topic=topics.deadletter)
    subscriber = broker.subscriber(
        topics.submitted, **subscriber_options(group, max_records=MAX_RECORDS)
    )

    async def on_vote_submitted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_submitted)
    return subscriber
