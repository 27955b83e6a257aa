"""Captcha benchmark: how many captchas ``POST /api/v1/captcha`` issues per second, and
per core, next to the vote rate.

Two figures. The render cost alone: :func:`shared.captcha.render_captcha` in a loop in
this process, one core. And through the API: a freshly started ingest service asked
for captchas by ``concurrency`` clients back to back (a closed loop: this measures
capacity, not latency under a given load) after its pre-rendered stock has been drained,
so the figure is what issuance sustains, not what the stock absorbs in a burst. Per
core is captchas issued divided by the CPU seconds the service's process tree (the
event loop and its render worker) used meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.env import BenchEnv, Process
from bench.http1 import ConnectionPool, HttpError
from bench.ingest import start_ingest
from bench.loadgen import NO_ANSWER, LatencyBook, setup_addresses
from shared.captcha import render_captcha

CAPTCHA_PATH = "/api/v1/captcha"


def render_cost(seconds: float = 2.0) -> tuple[int, float]:
    """(renders, seconds) of back-to-back renders on this process's one core."""
    secret = "bench-render-cost-" + "x" * 32
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        render_captcha(secret, datetime.now(UTC))
        count += 1
    return count, time.perf_counter() - started


async def _hammer(pool: ConnectionPool, seconds: float, concurrency: int) -> LatencyBook:
    book = LatencyBook()
    addresses = setup_addresses()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            headers = {"x-forwarded-for": next(addresses), "content-type": "application/json"}
            try:
                response = await pool.request("POST", CAPTCHA_PATH, headers, b"{}")
                status = response.status
            except HttpError:
                status = NO_ANSWER
            book.record(time.perf_counter() - started, status)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return book


@dataclass
class CaptchaResult:
    render_count: int
    render_seconds: float
    issued: int
    seconds: float
    server_cpu_seconds: float
    book: LatencyBook
    concurrency: int

    @property
    def render_ms(self) -> float:
        return 1000 * self.render_seconds / self.render_count

    @property
    def issued_per_second(self) -> float:
        return self.issued / self.seconds

    @property
    def per_core(self) -> float:
        return self.issued / self.server_cpu_seconds if self.server_cpu_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "render_ms": round(self.render_ms, 3),
            "renders_per_core_second": round(1000 / self.render_ms, 1),
            "issued": self.issued,
            "seconds": round(self.seconds, 2),
            "issued_per_second": round(self.issued_per_second, 1),
            "server_cpu_seconds": round(self.server_cpu_seconds, 2),
            "issued_per_cpu_second": round(self.per_core, 1),
            "statuses": dict(self.book.statuses),
            "latency_ms": {str(k): v for k, v in self.book.percentiles_ms().items()},
            "concurrency": self.concurrency,
        }


async def run_captcha(
    env: BenchEnv, seconds: float, *, drain_seconds: float = 5.0, concurrency: int = 16
) -> CaptchaResult:
    renders, render_seconds = await asyncio.to_thread(render_cost)
    process: Process = await asyncio.to_thread(start_ingest, env)
    try:
        pool = ConnectionPool.for_url(process.url, max_connections=concurrency)
        await _hammer(pool, drain_seconds, concurrency)  # empties the pre-rendered stock
        cpu_before = process.cpu_seconds()
        started = time.perf_counter()
        book = await _hammer(pool, seconds, concurrency)
        elapsed = time.perf_counter() - started
        cpu = process.cpu_seconds() - cpu_before
        await pool.close()
    finally:
        await asyncio.to_thread(process.stop)
    issued = book.statuses[201]
    return CaptchaResult(renders, render_seconds, issued, elapsed, cpu, book, concurrency)
