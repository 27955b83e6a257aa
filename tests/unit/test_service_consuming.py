"""A consuming service's life: what starts in which order, and what stops however it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.http import Health
from shared.service import consuming


class Parts:
    """Broker, producer, probe and pool fakes that write what is done to them in one list."""

    def __init__(self, *, failing_start: str = "") -> None:
        self.calls: list[str] = []
        self.failing_start = failing_start

    def fake(self, name: str, **extra: Any) -> Any:
        parts = self

        class Fake:
            async def start(self) -> None:
                parts.calls.append(f"start {name}")
                if parts.failing_start == name:
                    raise ConnectionError(f"{name} unreachable")

            async def stop(self) -> None:
                parts.calls.append(f"stop {name}")

            async def close(self) -> None:
                parts.calls.append(f"close {name}")

            def terminate(self) -> None:
                parts.calls.append(f"terminate {name}")

        fake = Fake()
        for key, value in extra.items():
            setattr(fake, key, value)
        return fake

    def service(self, *, with_probe: bool = True) -> dict[str, Any]:
        async def ping(**_: float) -> bool:
            return True

        async def fetchval(query: str) -> int:
            return 1

        return {
            "health": Health("test", ["kafka", "postgres"]),
            "broker": self.fake("consumer", ping=ping),
            "subscriber": object(),
            "group": "test-group",
            "pool": self.fake("pool", fetchval=fetchval),
            "producer": self.fake("producer"),
            "probe": self.fake("probe") if with_probe else None,
        }


async def test_starts_producer_probe_then_consumer_and_stops_them_the_other_way() -> None:
    parts = Parts()
    async with consuming(**parts.service()):
        parts.calls.append("serving")
    assert parts.calls == [
        "start producer",
        "start probe",
        "start consumer",
        "serving",
        "stop consumer",
        "stop probe",
        "stop producer",
        "close pool",
    ]


async def test_without_a_probe_nothing_is_done_for_one() -> None:
    parts = Parts()
    async with consuming(**parts.service(with_probe=False)):
        pass
    assert parts.calls == [
        "start producer",
        "start consumer",
        "stop consumer",
        "stop producer",
        "close pool",
    ]


async def test_a_failed_start_still_closes_everything_and_runs_no_task() -> None:
    parts = Parts(failing_start="producer")
    ran: list[str] = []

    async def task() -> None:
        ran.append("task")

    with pytest.raises(ConnectionError, match="producer unreachable"):
        async with consuming(**parts.service(), tasks={"task": task}):
            parts.calls.append("serving")
    assert "serving" not in parts.calls
    assert parts.calls[-1] == "close pool"
    assert "stop producer" in parts.calls
    assert ran == []


async def test_tasks_and_readiness_run_while_serving_and_are_cancelled_after() -> None:
    parts = Parts()
    service = parts.service()
    state: dict[str, str] = {}

    async def forever() -> None:
        state["task"] = "running"
        try:
            await asyncio.Event().wait()
        finally:
            state["task"] = "cancelled"

    async with consuming(**service, tasks={"forever": forever}):
        for _ in range(100):
            if service["health"].ready and state.get("task") == "running":
                break
            await asyncio.sleep(0.01)
        assert service["health"].ready
        assert state["task"] == "running"
    assert state["task"] == "cancelled"
