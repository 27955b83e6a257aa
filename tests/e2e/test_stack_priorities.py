"""On one machine the voter's path comes first: the consumers and Postgres, which have
seconds of room, run at a lower CPU priority than the edge and Kafka."""

from __future__ import annotations

import os

import pytest

from tests.stackctl import StackControl

pytestmark = pytest.mark.e2e


def niceness(stack: StackControl, name: str) -> int:
    pid = stack.pid(name)
    assert pid is not None, f"{name} is not running"
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_the_consumers_and_postgres_yield_the_cpu_to_the_edge(stack: StackControl) -> None:
    edge = niceness(stack, "vote_ingest")
    assert niceness(stack, "kafka") == edge
    for name in ("antifraud", "tally", "lottery", "postgres"):
        assert niceness(stack, name) == edge + 5, name
