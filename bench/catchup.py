"""Catch-up benchmarks: a consumer working off a backlog, against a bare aiokafka consumer
reading the same backlog in the same run.

The backlog is written to a topic of its own (4 partitions, like the service topics).
The bare consumer reads it with ``getmany`` and discards the records: the floor set by
the broker and the client library. The service's consumer then runs in-process exactly
as its service wires it (``attach`` on a FastStream broker, batches, one Postgres
transaction per batch, offsets committed after it), on a schema and consumer group of
its own. Progress is what the group has committed, read from the broker every 100 ms.

Both rates exclude the first batch: they are records / seconds from the first progress
seen to the backlog's end, so neither includes joining the group.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel

from bench.env import BENCH_POLL, BenchEnv
from bench.loadgen import CHOICES, Kind, Mix, plan_votes
from shared.captcha import expected_answer, issue
from shared.events import VoteAccepted, VoteSubmitted, new_vote_id
from shared.kafka import ensure_topics, make_broker, make_producer
from shared.pg import create_pool, migrate
from shared.producer import ReliableProducer
from shared.service import tuned_gc
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

PARTITIONS = 4
PROGRESS_INTERVAL = 0.1
Record = tuple[bytes, bytes]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- backlogs


def accepted_backlog(n: int, poll: str = BENCH_POLL, seed: int = 1) -> list[Record]:
    """``n`` distinct accepted votes for tally, over the last ``n / 1000`` seconds."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[Record] = []
    for i in range(n):
        received = now - timedelta(seconds=(n - i) / 1000)
        vote = VoteAccepted(
            vote_id=new_vote_id(),
            poll_id=poll,
            choice=rng.choice(CHOICES),
            voter_id=f"v-{uuid.uuid4().hex}",
            day=date.today(),
            received_at=received,
            decided_at=received,
        )
        out.append((vote.voter_id.encode(), vote.model_dump_json().encode()))
    return out


def submitted_backlog(
    n: int, captcha_secret: str, mix: Mix, poll: str = BENCH_POLL, seed: int = 1
) -> list[Record]:
    """``n`` submissions with the load generator's mix, as if received at 1000/s."""
    rng = random.Random(seed)
    plan, voters = plan_votes(n, mix, rng)
    voter_ids = [f"v-{uuid.uuid4().hex}" for _ in range(voters)]
    start = datetime.now(UTC) - timedelta(seconds=n / 1000 + 60)
    out: list[Record] = []
    for planned in plan:
        received = start + timedelta(seconds=planned.seq / 1000)
        captcha_id = issue(captcha_secret, received - timedelta(seconds=20))
        answer = expected_answer(captcha_secret, captcha_id)
        if planned.kind is Kind.WRONG_CAPTCHA:
            answer = ("A" if answer[0] != "A" else "C") + answer[1:]
        vote = VoteSubmitted(
            vote_id=new_vote_id(),
            poll_id=poll,
            choice=planned.choice,
            voter_id=voter_ids[planned.voter],
            captcha_id=captcha_id,
            captcha_answer=answer,
            received_at=received,
            client_ip=planned.address,
            user_agent="votes-bench/1",
        )
        out.append((vote.voter_id.encode(), vote.model_dump_json().encode()))
    return out


async def create_topics(bootstrap: str, *names: str) -> None:
    await ensure_topics(bootstrap, partitions=PARTITIONS, replication=1, topics=names)


async def produce(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    """Write every record (acks=all); returns the records per second achieved."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=512 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for chunk in range(0, len(records), 5000):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in records[chunk : chunk + 5000]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


async def produce_paced(
    bootstrap: str, topic: str, records: Sequence[Record], rate: float, tick: float = 0.01
) -> None:
    """Write the records at ``rate`` per second, in small groups every ``tick`` seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        start = time.perf_counter()
        sent = 0
        pending = []
        while sent < len(records):
            due = min(len(records), int((time.perf_counter() - start) * rate) + 1)
            for key, value in records[sent:due]:
                pending.append(await producer.send(topic, value, key=key))
            sent = due
            await asyncio.sleep(tick)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- measuring


@dataclass
class Catchup:
    consumer: str
    records: int
    seconds: float  # from the first progress seen to the end of the backlog
    first: int  # records already done at the first progress seen
    total_seconds: float  # from start, joining the group included
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.records - self.first) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumer": self.consumer,
            "records": self.records,
            "rate": round(self.rate, 1),
            "seconds": round(self.seconds, 2),
            "total_seconds": round(self.total_seconds, 2),
            **self.extra,
        }


async def bare_consume(
    bootstrap: str,
    topic: str,
    n: int,
    within: float = 600,
    decode: Callable[[bytes], object] | None = None,
) -> Catchup:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=unique("bench_bare"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    started = time.perf_counter()
    await consumer.start()
    seen = 0
    first_at: float | None = None
    first = 0
    try:
        while seen < n and time.perf_counter() - started < within:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                seen += len(records)
                if decode is not None:
                    for record in records:
                        decode(record.value)
            if first_at is None and seen:
                first_at, first = time.perf_counter(), seen
        await consumer.commit()
    finally:
        await consumer.stop()
    done = time.perf_counter()
    if seen < n:
        raise RuntimeError(f"bare consumer read {seen} of {n} records within {within} s")
    name = "bare aiokafka" if decode is None else "bare aiokafka + pydantic decode"
    return Catchup(name, n, done - (first_at or done), first, done - started)


async def committed(admin: AIOKafkaAdminClient, group: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(max(0, meta.offset) for meta in offsets.values())


async def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def wait_committed(
    bootstrap: str, group: str, n: int, started: float, name: str, within: float = 900
) -> Catchup:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    first_at: float | None = None
    first = 0
    try:
        while True:
            done = await committed(admin, group)
            now = time.perf_counter()
            if first_at is None and done:
                first_at, first = now, done
            if done >= n:
                return Catchup(name, n, now - (first_at or now), first, now - started)
            if now - started > within:
                raise RuntimeError(f"{name} committed {done} of {n} records within {within} s")
            await asyncio.sleep(PROGRESS_INTERVAL)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- database


class StatementCounter:
    """Counts the statements a pool's connections send (asyncpg query loggers)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_text: dict[str, int] = {}

    def __call__(self, record: Any) -> None:
        self.count += 1
        key = " ".join(str(record.query).split())[:60]
        self.by_text[key] = self.by_text.get(key, 0) + 1

    def reset(self) -> None:
        self.count = 0
        self.by_text.clear()


@asynccontextmanager
async def service_pool(
    dsn: str,
    schema: str,
    migrations: Path,
    counter: StatementCounter | None = None,
    *,
    reset_session: bool = True,
    planner: Mapping[str, str] | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """The service's own pool (shared.pg), on a fresh schema, dropped afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, schema, migrations)
    finally:
        await conn.close()

    async def init(connection: asyncpg.Connection) -> None:
        if counter is not None:
            connection.add_query_logger(counter)

    pool = await create_pool(dsn, schema, reset_session=reset_session, init=init, planner=planner)
    try:
        yield pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


async def xact_commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(value)
    finally:
        await conn.close()


Attach = Callable[[Any, asyncpg.Pool, str, ReliableProducer], object]


@asynccontextmanager
async def running_consumer(
    bootstrap: str, group: str, pool: asyncpg.Pool, attach: Attach
) -> AsyncIterator[None]:
    settings = ServiceSettings(kafka_bootstrap_servers=bootstrap)
    broker = make_broker(settings, client_id=group)
    producer = make_producer(settings, client_id=group)
    await producer.start()
    attach(broker, pool, group, producer)
    try:
        # The consumer runs with the collector settings its service runs with.
        with tuned_gc():
            async with broker:
                await broker.start()
                yield
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- the parts


@dataclass
class CatchupResult:
    service: str
    backlog: int
    produce_rate: float
    bare: Catchup
    consumer: Catchup
    checks: dict[str, Any] = field(default_factory=dict)
    decoding: Catchup | None = None  # diagnostic: the bare read plus decoding each record

    @property
    def ratio(self) -> float:
        return self.consumer.rate / self.bare.rate if self.bare.rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "backlog": self.backlog,
            "produce_rate": round(self.produce_rate, 1),
            "bare": self.bare.to_dict(),
            "decoding": self.decoding.to_dict() if self.decoding else None,
            "consumer": self.consumer.to_dict(),
            "ratio": self.ratio,
            "checks": self.checks,
        }


# A read of the whole backlog lasts about a second: one stall of the shared machine
# moves it by a third. Such short runs are made this many times and the fastest kept,
# for the baseline and the consumer alike.
SHORT_RUN_REPEATS = 3


def fastest(runs: Sequence[Catchup]) -> Catchup:
    best = max(runs, key=lambda run: run.rate)
    best.extra["runs"] = [round(run.rate, 1) for run in runs]
    return best


async def bare_baselines(
    bootstrap: str, topic: str, n: int, model: type[BaseModel]
) -> tuple[Catchup, Catchup]:
    """The bare read, and the bare read with decoding (diagnostic), each the fastest of
    SHORT_RUN_REPEATS."""
    bare = [await bare_consume(bootstrap, topic, n) for _ in range(SHORT_RUN_REPEATS)]
    decoding = [
        await bare_consume(bootstrap, topic, n, decode=model.model_validate_json)
        for _ in range(SHORT_RUN_REPEATS)
    ]
    return fastest(bare), fastest(decoding)


async def tally_catchup(env: BenchEnv, n: int) -> CatchupResult:
    from services.tally import consumer as tally

    topic, dlq = unique("bench_accepted"), unique("bench_dlq")
    await create_topics(env.kafka_bootstrap, topic, dlq)
    produce_rate = await produce(env.kafka_bootstrap, topic, accepted_backlog(n))
    bare, decoding = await bare_baselines(env.kafka_bootstrap, topic, n, VoteAccepted)

    def attach(broker: Any, pool: asyncpg.Pool, group: str, producer: ReliableProducer) -> object:
        return tally.attach(
            broker, pool, topic=topic, group=group, deadletter_topic=dlq, producer=producer
        )

    outcomes = [await _tally_run(env, n, attach) for _ in range(SHORT_RUN_REPEATS)]
    counted = [votes for _, votes in outcomes]
    checks = {"counted": counted, "expected": n, "exact": all(c == n for c in counted)}
    runs = [run for run, _ in outcomes]
    return CatchupResult("tally", n, produce_rate, bare, fastest(runs), checks, decoding)


async def _tally_run(env: BenchEnv, n: int, attach: Attach) -> tuple[Catchup, int]:
    """One catch-up over the whole backlog, on a schema and group of its own, and the
    votes it counted."""
    from services.tally import consumer as tally
    from services.tally import store

    schema, group = unique("bench_tally"), unique("bench_tally")
    migrations = Path(tally.__file__).parent / "migrations"
    resets = store.POOL_RESETS_SESSION
    async with service_pool(env.database_url, schema, migrations, reset_session=resets) as pool:
        started = time.perf_counter()
        async with running_consumer(env.kafka_bootstrap, group, pool, attach):
            result = await wait_committed(env.kafka_bootstrap, group, n, started, "tally")
        counted = sum(sum(c.values()) for c in (await store.read_counts(pool)).values())
    return result, counted


def _antifraud() -> Any:
    # Imported by name: the bench runs (and type-checks) whether or not antifraud is built.
    return importlib.import_module("services.antifraud.consumer")


def antifraud_ready() -> str | None:
    """None when the antifraud consumer can run; otherwise why not."""
    try:
        _antifraud()
    except ImportError as exc:
        return f"the antifraud consumer cannot be imported ({exc})"
    return None


async def antifraud_catchup(env: BenchEnv, n: int, mix: Mix) -> CatchupResult:
    from shared.catalog import load_catalog

    antifraud = _antifraud()
    names = {k: unique(f"bench_{k}") for k in ("submitted", "accepted", "rejected", "dlq")}
    schema, group = unique("bench_antifraud"), unique("bench_antifraud")
    await create_topics(env.kafka_bootstrap, *names.values())
    backlog = submitted_backlog(n, env.captcha_secret, mix)
    produce_rate = await produce(env.kafka_bootstrap, names["submitted"], backlog)
    # The consumer's own run lasts half a minute and is made once.
    bare, decoding = await bare_baselines(env.kafka_bootstrap, names["submitted"], n, VoteSubmitted)
    catalog = load_catalog(env.polls_file)
    topics = antifraud.Topics(
        names["submitted"], names["accepted"], names["rejected"], names["dlq"]
    )
    migrations = Path(antifraud.__file__).parent / "migrations"

    def attach(broker: Any, pool: asyncpg.Pool, group: str, producer: ReliableProducer) -> object:
        return antifraud.attach(
            broker,
            pool,
            catalog,
            env.captcha_secret,
            lambda: datetime.now(UTC),
            topics=topics,
            group=group,
            producer=producer,
        )

    # The pool as the service opens it.
    async with service_pool(
        env.database_url,
        schema,
        migrations,
        reset_session=antifraud.store.POOL_RESETS_SESSION,
        planner=antifraud.store.PLANNER,
    ) as pool:
        started = time.perf_counter()
        async with running_consumer(env.kafka_bootstrap, group, pool, attach):
            result = await wait_committed(env.kafka_bootstrap, group, n, started, "antifraud")
    accepted = await end_offsets(env.kafka_bootstrap, names["accepted"])
    rejected = await end_offsets(env.kafka_bootstrap, names["rejected"])
    checks = {"accepted": accepted, "rejected": rejected, "decided": accepted + rejected}
    return CatchupResult("antifraud", n, produce_rate, bare, result, checks, decoding)


# --------------------------------------------------------------------------- statements


@dataclass
class StatementLevel:
    rate: float
    votes: int
    statements: int
    xact_commits: int
    seconds: float
    by_text: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "votes": self.votes,
            "statements": self.statements,
            "statements_per_vote": self.statements / self.votes if self.votes else None,
            "xact_commits": self.xact_commits,
            "xact_per_vote": self.xact_commits / self.votes if self.votes else None,
            "seconds": round(self.seconds, 2),
            "by_text": self.by_text,
        }


async def tally_statements(
    env: BenchEnv, rates: Iterable[float], seconds: float
) -> list[StatementLevel]:
    """Statements tally sends per vote while votes arrive at each rate (in-process)."""
    from services.tally import consumer as tally
    from services.tally import store

    levels = []
    migrations = Path(tally.__file__).parent / "migrations"
    for rate in rates:
        topic, dlq = unique("bench_accepted"), unique("bench_dlq")
        schema, group = unique("bench_tally"), unique("bench_tally")
        n = max(1, int(rate * seconds))
        await create_topics(env.kafka_bootstrap, topic, dlq)
        records = accepted_backlog(n)
        counter = StatementCounter()

        def attach(
            broker: Any,
            pool: asyncpg.Pool,
            group: str,
            producer: ReliableProducer,
            t: str = topic,
            d: str = dlq,
        ) -> object:
            return tally.attach(
                broker, pool, topic=t, group=group, deadletter_topic=d, producer=producer
            )

        resets = store.POOL_RESETS_SESSION
        async with service_pool(
            env.database_url, schema, migrations, counter, reset_session=resets
        ) as pool:
            async with running_consumer(env.kafka_bootstrap, group, pool, attach):
                await asyncio.sleep(2)  # joined and idle: start counting from here
                counter.reset()
                before = await xact_commits(env.database_url)
                started = time.perf_counter()
                await produce_paced(env.kafka_bootstrap, topic, records, rate)
                await wait_committed(env.kafka_bootstrap, group, n, started, "tally")
                elapsed = time.perf_counter() - started
            statements, by_text = counter.count, dict(counter.by_text)
            # A backend reports its commits when it exits (or idles a while): close the
            # pool first. The first read's own two statements are commits too.
            await pool.close()
            xacts = await xact_commits(env.database_url) - before - 2
        levels.append(StatementLevel(rate, n, statements, xacts, elapsed, by_text))
        log.info("tally statements at %s/s: %s", rate, levels[-1].to_dict())
    return levels
