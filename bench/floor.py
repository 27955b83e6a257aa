"""What every vote costs the edge at the least, measured on this machine in the same run:
the pieces no vote can skip whatever the code around them, set against the CPU per vote
that the ingest target leaves the edge's one process.

- the HTTP stack: the bare endpoint's CPU per request (measured by the ingest part);
- verifying the voter token: the edge's own ``VoterTokens.verify`` (PyJWT, HS256) on
  tokens it has not seen before, as each vote brings (one vote per person per day);
- one acknowledged send to Kafka as the edge makes it: the edge's producer
  (``edge_producer``: acks=all, idempotent, its linger and timeouts), a task per vote
  arriving at the target rate, each send under the edge's deadline. Its CPU is the bench
  process's, less that of the same tasks doing nothing but wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bench import catchup
from bench.env import BenchEnv
from bench.loadgen import Mix
from services.vote_ingest.main import IngestSettings, edge_producer
from shared.auth import VoterTokens

# The edge's deadline for a publish, as it runs by default.
PUBLISH_TIMEOUT: float = IngestSettings.model_fields["publish_timeout_seconds"].default
# A send's acknowledgement takes a few milliseconds; the tasks of the comparison run
# wait about as long, so both keep about as many tasks alive at once.
WAIT_SECONDS = 0.005


@dataclass(frozen=True)
class Floor:
    rate: float
    token_check_us: float
    send_cpu_us: float
    schedule_cpu_us: float
    sends: int
    send_failures: int

    @property
    def send_us(self) -> float:
        """CPU of a send itself: the paced sends' less the same tasks only waiting."""
        return max(0.0, self.send_cpu_us - self.schedule_cpu_us)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "send_us": self.send_us}


def token_check_us(secret: str, n: int) -> float:
    """CPU microseconds of one verification of a token not seen before."""
    tokens = VoterTokens(secret)
    now = datetime.now(UTC)
    fresh = [tokens.issue(now).token for _ in range(n)]
    started = time.process_time()
    for token in fresh:
        tokens.verify(token)
    return (time.process_time() - started) / n * 1e6


async def paced_cpu_us(rate: float, n: int, work: Callable[[int], Awaitable[None]]) -> float:
    """CPU microseconds per task of ``n`` tasks started at ``rate`` a second (open model),
    each running ``work(i)``; the calling process's CPU, from the first start to the last
    end. Failures are the work's to count."""
    tasks: list[asyncio.Future[None]] = []
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(work(i)))
    await asyncio.gather(*tasks)
    return (time.process_time() - cpu) / n * 1e6


async def edge_send_us(
    bootstrap: str, topic: str, records: Sequence[catchup.Record], rate: float
) -> tuple[float, float, int]:
    """(CPU us per send, CPU us per idle task, failed sends) at ``rate`` sends a second.
    The first records (up to 2,000) are sent once more beforehand, unmeasured, so the
    producer has its connections and metadata."""
    producer = edge_producer({"bootstrap_servers": bootstrap}, PUBLISH_TIMEOUT)
    await producer.start()
    failures = 0

    async def send(i: int) -> None:
        nonlocal failures
        key, value = records[i]
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await producer.send(topic, value, key)
        except Exception:  # counted and reported
            failures += 1

    async def wait(i: int) -> None:
        await asyncio.sleep(WAIT_SECONDS)

    try:
        warm = min(len(records), 2_000)
        await asyncio.gather(*(send(i) for i in range(warm)))
        failures = 0
        send_cpu = await paced_cpu_us(rate, len(records), send)
        idle_cpu = await paced_cpu_us(rate, len(records), wait)
    finally:
        await producer.stop()
    return send_cpu, idle_cpu, failures


async def measure(env: BenchEnv, rate: float, seconds: float, tokens: int) -> Floor:
    token_us = token_check_us(env.voter_token_secret, tokens)
    records = catchup.submitted_backlog(max(1, round(rate * seconds)), env.captcha_secret, Mix())
    topic = catchup.unique("bench_edge_send")
    await catchup.create_topics(env.kafka_bootstrap, topic)
    send_cpu, idle_cpu, failures = await edge_send_us(env.kafka_bootstrap, topic, records, rate)
    return Floor(
        rate=rate,
        token_check_us=token_us,
        send_cpu_us=send_cpu,
        schedule_cpu_us=idle_cpu,
        sends=len(records),
        send_failures=failures,
    )
