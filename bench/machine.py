"""What the figures were measured on: cores, memory, CPU model, load and versions."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg

from bench.env import REPO


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def kafka_version() -> str:
    """The broker version pinned for the local stack (deploy/local/kafka/pom.xml)."""
    pom = REPO / "deploy" / "local" / "kafka" / "pom.xml"
    try:
        found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


async def postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _aiokafka_c_extension() -> bool:
    try:
        import aiokafka.record._crecords  # noqa: F401
    except ImportError:
        return False
    return True


async def describe(dsn: str) -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "kafka": kafka_version(),
        "postgres": await postgres_version(dsn),
        "aiokafka_c_extension": _aiokafka_c_extension(),
        "load_average_at_start": [round(x, 2) for x in load],
    }
