"""Consumes votes.accepted: count each batch in one transaction, then commit offsets.

Batches overlap: while Postgres writes one batch, the next is fetched and decoded (see
shared.consuming.BatchRunner); offsets are still committed in order, each after the
transaction that counted its batch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Annotated

import asyncpg
import msgspec
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.tally import store
from services.tally.rules import delay_histogram
from shared.consuming import BatchRunner, subscriber_options
from shared.events import TOPIC_ACCEPTED, TOPIC_DEADLETTER
from shared.metric_names import DELAY_BUCKETS
from shared.producer import ReliableProducer

GROUP = "tally"
# A catch-up reads as many records per batch as a fetch brings (about 4,000 per
# partition): one transaction and one offset commit per batch, however large.
MAX_RECORDS = 10_000

VOTES_COUNTED = Counter("votes_counted_total", "Accepted votes counted", ["poll", "choice"])


class DelayHistogram(Collector):
    """A Prometheus histogram observed a batch at a time: the same series as
    prometheus_client's Histogram, without its lock and bucket search for every vote
    (which cost a catch-up more than decoding the votes did)."""

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self.name, self.documentation, self.bounds = name, documentation, tuple(bounds)
        self._within = [0] * len(self.bounds)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()  # /metrics may be served from another thread

    def observe_batch(self, received: Sequence[datetime], now: datetime) -> None:
        within, total = delay_histogram(received, now, self.bounds)
        with self._lock:
            self._within = [a + b for a, b in zip(self._within, within, strict=True)]
            self._count += len(received)
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            within, count, total = list(self._within), self._count, self._sum
        buckets = [(str(float(b)), float(n)) for b, n in zip(self.bounds, within, strict=True)]
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=[*buckets, ("+Inf", float(count))],
            sum_value=total,
        )


COUNT_DELAY = DelayHistogram(
    "vote_count_delay_seconds", "From received_at to the vote being counted", DELAY_BUCKETS
)
REGISTRY.register(COUNT_DELAY)
_received_at = attrgetter("received_at")

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class AcceptedVote(msgspec.Struct, frozen=True, gc=False):
    """The `votes.accepted` record as shared.events.VoteAccepted defines it, decoded with
    msgspec: every field is checked as the pydantic model checks it (a record that fails
    is dead-lettered), about nine times cheaper, which decides how fast tally catches up.
    Unknown fields are ignored, as the event model does. Its fields are strings and dates,
    which cannot form a reference cycle, so the garbage collector need not track the
    tens of thousands of votes a catch-up holds at once."""

    vote_id: str
    poll_id: str
    choice: str
    voter_id: str
    day: date
    received_at: AwareDatetime
    decided_at: AwareDatetime


def observe(counted: store.Counted[AcceptedVote], now: datetime) -> None:
    for (poll, choice), n in counted.totals.items():
        VOTES_COUNTED.labels(poll, choice).inc(n)
    COUNT_DELAY.observe_batch(list(map(_received_at, counted.votes)), now)


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

    subscriber = broker.subscriber(topic, **subscriber_options(group, max_records=MAX_RECORDS))
    runner = BatchRunner(
        producer, AcceptedVote, group, handle, deadletter_topic=deadletter_topic, overlap=subscriber
    )

    async def on_vote_accepted(msg: KafkaMessage) -> None:
        await runner(msg)

    subscriber(on_vote_accepted)

    return subscriber
