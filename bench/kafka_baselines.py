"""Kafka's floor on this machine: a bare aiokafka producer and consumer, and Kafka's own
ProducerPerformance tool (kafka-tools), on the same broker with the same vote records."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench import catchup
from bench.env import BenchEnv
from bench.loadgen import Mix

log = logging.getLogger("bench")


PERF_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th, (?P<p999>\d+) ms 99.9th"
)


def parse_producer_performance(output: str) -> dict[str, float] | None:
    """The final summary line of Kafka's ProducerPerformance tool."""
    matches = list(PERF_LINE.finditer(output))
    if not matches:
        return None
    return {k: float(v) for k, v in matches[-1].groupdict().items()}


def producer_performance(
    bootstrap: str, topic: str, payloads: Path, records: int, run_dir: Path
) -> dict[str, Any]:
    """Kafka's own producer benchmark (kafka-tools) on the same broker and records."""
    from scripts.stack import StackError, kafka_libs

    java = shutil.which("java")
    if java is None:
        return {"skipped": "no java on PATH"}
    try:
        libs = kafka_libs(lambda note: log.info("pipeline: %s", note))
    except StackError as exc:
        return {"skipped": str(exc)}
    command = [
        java,
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--payload-file",
        str(payloads),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=600, cwd=run_dir
    )
    parsed = parse_producer_performance(result.stdout)
    if result.returncode != 0 or parsed is None:
        tail = (result.stdout + result.stderr)[-1500:]
        return {"skipped": f"ProducerPerformance failed (exit {result.returncode}): {tail}"}
    return {"rate": parsed["rate"], "summary": parsed, "acks": "all"}


async def baselines(env: BenchEnv, n: int, mix: Mix) -> dict[str, Any]:
    records = catchup.submitted_backlog(n, env.captcha_secret, mix)
    size = sum(len(value) for _, value in records) / len(records)
    produced = catchup.unique("bench_pipe_producer")
    perf_topic = catchup.unique("bench_pipe_perf")
    await catchup.create_topics(env.kafka_bootstrap, produced, perf_topic)
    producer_rate = await catchup.produce(env.kafka_bootstrap, produced, records)
    consumer = await catchup.bare_consume(env.kafka_bootstrap, produced, n)
    payloads = env.run_dir / "bench-payloads.txt"
    payloads.write_bytes(b"\n".join(value for _, value in records))
    perf = await asyncio.to_thread(
        producer_performance, env.kafka_bootstrap, perf_topic, payloads, n, env.run_dir
    )
    return {
        "records": n,
        "record_bytes": round(size),
        "aiokafka_producer": producer_rate,
        "aiokafka_consumer": consumer.rate,
        "producer_performance": perf,
    }
