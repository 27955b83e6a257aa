"""Consumes votes.accepted: count each batch in one transaction, then commit offsets."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from services.tally import store
from shared.consuming import BatchRunner, subscriber_options
from shared.events import TOPIC_ACCEPTED, TOPIC_DEADLETTER, VoteAccepted
from shared.metric_names import DELAY_BUCKETS

GROUP = "tally"

VOTES_COUNTED = Counter("votes_counted_total", "Accepted votes counted", ["poll", "choice"])
COUNT_DELAY = Histogram(
    "vote_count_delay_seconds",
    "From received_at to the vote being counted",
    buckets=DELAY_BUCKETS,
)


def attach(
    broker: KafkaBroker,
    pool: asyncpg.Pool,
    *,
    topic: str = TOPIC_ACCEPTED,
    group: str = GROUP,
    deadletter_topic: str = TOPIC_DEADLETTER,
) -> object:
    """Register the subscriber on the broker; returns it (for lag reporting)."""

    async def handle(votes: list[VoteAccepted]) -> None:
        counted = await store.count_batch(pool, votes)
        now = datetime.now(UTC)
        for vote in counted:
            VOTES_COUNTED.labels(vote.poll_id, vote.choice).inc()
            COUNT_DELAY.observe(max(0.0, (now - vote.received_at).total_seconds()))

    runner = BatchRunner(broker, VoteAccepted, group, handle, deadletter_topic=deadletter_topic)
    subscriber = broker.subscriber(topic, **subscriber_options(group))

    async def on_vote_accepted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_accepted)

    return subscriber
