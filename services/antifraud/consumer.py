"""Consumes votes.submitted: decide a batch in one transaction, publish, then commit.

A crash can fall between the database commit and the publish of the decisions. On the
replay those votes are already decided: their stored decisions are published again
(downstream consumers dedupe by vote_id), so no vote is silently lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
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
    VoteAccepted,
    VoteRejected,
    VoteSubmitted,
)
from shared.metric_names import DELAY_BUCKETS
from shared.producer import ReliableProducer

GROUP = "antifraud"
# Each vote locks up to five keys (voter, address, subnet, captcha, day) for its batch's
# transaction; 500 votes keep that within the lock table the server is configured for
# (max_locks_per_transaction) even with many replicas catching up at once.
MAX_RECORDS = 500

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


def decision_event(decision: Decision, decided_at: datetime, topics: Topics) -> tuple[str, bytes]:
    if decision.reason is None:
        assert decision.day is not None  # noqa: S101 - accepted decisions always carry a day
        accepted = VoteAccepted(
            vote_id=decision.vote_id,
            poll_id=decision.poll_id,
            choice=decision.choice,
            voter_id=decision.voter_id,
            day=decision.day,
            received_at=decision.received_at,
            decided_at=decided_at,
        )
        return topics.accepted, accepted.model_dump_json().encode()
    rejected = VoteRejected(
        vote_id=decision.vote_id,
        poll_id=decision.poll_id,
        voter_id=decision.voter_id,
        reason=decision.reason,
        received_at=decision.received_at,
        decided_at=decided_at,
    )
    return topics.rejected, rejected.model_dump_json().encode()


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
        outcome = await store.decide_and_record(pool, submissions, catalog, captcha_secret, clock())
        await producer.send_many(
            (
                *decision_event(item.decision, item.decided_at, topics),
                item.decision.voter_id.encode(),
            )
            for item in outcome
        )
        now = clock()
        for item in outcome:
            if item.fresh:
                d = item.decision
                verdict = "accepted" if d.reason is None else "rejected"
                # Labels stay bounded: a poll id not in the catalog is reported as "unknown".
                poll = d.poll_id if catalog.get(d.poll_id) else "unknown"
                VOTES_DECIDED.labels(poll, verdict, d.reason or "").inc()
                DECISION_DELAY.observe(max(0.0, (now - d.received_at).total_seconds()))

    runner = BatchRunner(producer, VoteSubmitted, group, handle, deadletter_topic=topics.deadletter)
    subscriber = broker.subscriber(
        topics.submitted, **subscriber_options(group, max_records=MAX_RECORDS)
    )

    async def on_vote_submitted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_submitted)
    return subscriber
