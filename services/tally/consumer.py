"""Consumes votes.accepted: count each batch in one transaction, then commit offsets."""

from __future__ import annotations

from collections import Counter as Tally
from datetime import UTC, date, datetime
from typing import Annotated

import asyncpg
import msgspec
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import Counter, Histogram

from services.tally import store
from shared.consuming import BatchRunner, subscriber_options
from shared.events import TOPIC_ACCEPTED, TOPIC_DEADLETTER
from shared.metric_names import DELAY_BUCKETS
from shared.producer import ReliableProducer

GROUP = "tally"
# A catch-up reads as many records per batch as a fetch brings (about 4,000 per
# partition): one transaction and one offset commit per batch, however large.
MAX_RECORDS = 10_000

VOTES_COUNTED = Counter("votes_counted_total", "Accepted votes counted", ["poll", "choice"])
COUNT_DELAY = Histogram(
    "vote_count_delay_seconds",
    "From received_at to the vote being counted",
    buckets=DELAY_BUCKETS,
)

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class AcceptedVote(msgspec.Struct, frozen=True):
    """The `votes.accepted` record as shared.events.VoteAccepted defines it, decoded with
    msgspec: every field is checked as the pydantic model checks it (a record that fails
    is dead-lettered), about nine times cheaper, which decides how fast tally catches up.
    Unknown fields are ignored, as the event model does."""

    vote_id: str
    poll_id: str
    choice: str
    voter_id: str
    day: date
    received_at: AwareDatetime
    decided_at: AwareDatetime


def observe(counted: list[AcceptedVote], now: datetime) -> None:
    for (poll, choice), n in Tally((v.poll_id, v.choice) for v in counted).items():
        VOTES_COUNTED.labels(poll, choice).inc(n)
    for vote in counted:
        COUNT_DELAY.observe(max(0.0, (now - vote.received_at).total_seconds()))


def attach(
    broker: KafkaBroker,
    pool: asyncpg.Pool,
    *,
    topic: str = TOPIC_ACCEPTED,
    group: str = GROUP,
    deadletter_topic: str = TOPIC_DEADLETTER,
    producer: ReliableProducer,
) -> object:
    """Register the subscriber on the broker; returns it (for lag reporting)."""

    async def handle(votes: list[AcceptedVote]) -> None:
        counted = await store.count_batch(pool, votes)
        observe(counted, datetime.now(UTC))

    runner = BatchRunner(producer, AcceptedVote, group, handle, deadletter_topic=deadletter_topic)
    subscriber = broker.subscriber(topic, **subscriber_options(group, max_records=MAX_RECORDS))

    async def on_vote_accepted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_accepted)

    return subscriber
