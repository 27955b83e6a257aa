"""Consumes votes.accepted: count each batch in one transaction, then commit offsets."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from services.tally import store
from shared.consuming import BatchRunner, subscriber_options
from shared.events import TOPIC_ACCEPTED, VoteAccepted
from shared.metrics import DELAY_BUCKETS

GROUP = "tally"

VOTES_COUNTED = Counter("votes_counted_total", "Accepted votes counted", ["poll", "choice"])
COUNT_DELAY = Histogram(
    "vote_count_delay_seconds",
    "From received_at to the vote being counted",
    buckets=DELAY_BUCKETS,
)


def attach(broker: KafkaBroker, pool: asyncpg.Pool, clock: type[datetime] = datetime) -> object:
    """Register the subscriber on the broker; returns it (for lag reporting)."""

    async def handle(votes: list[VoteAccepted]) -> None:
        counted = await store.count_batch(pool, votes)
        now = clock.now().astimezone()
        for vote in counted:
            VOTES_COUNTED.labels(vote.poll_id, vote.choice).inc()
            COUNT_DELAY.observe(max(0.0, (now - vote.received_at).total_seconds()))

    runner = BatchRunner(broker, VoteAccepted, GROUP, handle)
    subscriber = broker.subscriber(TOPIC_ACCEPTED, **subscriber_options(GROUP))

    async def on_vote_accepted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_accepted)

    return subscriber
