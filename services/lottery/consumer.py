"""Consumes votes.accepted: record each voter's voting days, then commit offsets."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from services.lottery import store
from services.lottery.schedule import counts_toward_days
from shared.catalog import Catalog
from shared.consuming import BatchRunner, subscriber_options
from shared.events import TOPIC_ACCEPTED, TOPIC_DEADLETTER, VoteAccepted
from shared.producer import ReliableProducer

GROUP = "lottery"


def days_voted(catalog: Catalog, votes: Iterable[VoteAccepted]) -> list[store.VoterDay]:
    """The (poll, voter, day) rows a batch of accepted votes gives the draw.

    The day is recomputed from `received_at` on the poll's clock, by the same rule that
    decided the vote, and a vote outside the poll's window gives no day at all: only
    votes received before the close may weigh in the draw.
    """
    rows = []
    for vote in votes:
        poll = catalog.get(vote.poll_id)
        if poll is None or not counts_toward_days(poll, vote.received_at):
            continue
        day = poll.day_of(vote.received_at)
        rows.append(store.VoterDay(poll.id, vote.voter_id, day, vote.vote_id, vote.received_at))
    return rows


def attach(
    broker: KafkaBroker,
    pool: asyncpg.Pool,
    catalog: Catalog,
    *,
    topic: str = TOPIC_ACCEPTED,
    group: str = GROUP,
    deadletter_topic: str = TOPIC_DEADLETTER,
    producer: ReliableProducer,
) -> object:
    """Register the subscriber on the broker; returns it (for lag reporting)."""

    async def handle(votes: list[VoteAccepted]) -> None:
        await store.record_days(pool, days_voted(catalog, votes))

    runner = BatchRunner(producer, VoteAccepted, group, handle, deadletter_topic=deadletter_topic)
    subscriber = broker.subscriber(topic, **subscriber_options(group))

    async def on_vote_accepted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_accepted)
    return subscriber
