"""A fresh stack starts clean: no service logs an error on its way up.

The suite's stack is new every run (a new Kafka log directory and Postgres cluster), as a
new user's first `make run` is, so the first start of each service in its log is the one
that user sees on the console.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SERVICES = ("vote_ingest", "antifraud", "tally", "lottery")
STARTED = "Application startup complete."


def first_start(log: Path) -> list[dict[str, str]]:
    """The JSON records of the service's first start, up to its startup completing."""
    records: list[dict[str, str]] = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.startswith("{"):
            continue  # the runner's own "--- ... stack: starting" lines
        record = json.loads(line)
        records.append(record)
        if record.get("msg") == STARTED:
            return records
    raise AssertionError(f"{log.name}: no {STARTED!r} in the log")


@pytest.mark.parametrize("service", SERVICES)
def test_a_fresh_start_logs_no_error(stack_run_dir: Path, service: str) -> None:
    records = first_start(stack_run_dir / "logs" / f"{service}.log")
    errors = [r["msg"] for r in records if r.get("level") in ("error", "critical")]
    assert errors == []
