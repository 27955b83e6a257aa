"""Background tasks and the readiness watcher: they run with the service and stop with it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.http import Health
from shared.service import background, watch_dependencies


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4])
async def test_a_cancel_that_meets_a_probe_just_finished_still_stops_the_watch(steps: int) -> None:
    # The service's shutdown cancels the watcher whenever it comes; landing between a
    # probe's answer and the watcher reading it must not be lost (asyncio.wait_for on
    # Python 3.11 drops such a cancel, and the shutdown then waited forever).
    health = Health("test", ["kafka"])
    entered, gate = asyncio.Event(), asyncio.Event()

    async def probe() -> bool:
        entered.set()
        await gate.wait()
        return True

    watch = asyncio.create_task(watch_dependencies(health, {"kafka": probe}, interval=30))
    await entered.wait()
    gate.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    watch.cancel()
    await asyncio.wait({watch}, timeout=2)
    assert watch.cancelled(), "the watcher went on after being cancelled"


async def test_readiness_follows_the_probes_and_a_slow_or_failing_one_is_down() -> None:
    health = Health("test", ["kafka", "postgres", "cache"])
    health.set("postgres", True)
    health.set("cache", True)
    rounds = 0

    async def up() -> bool:
        nonlocal rounds
        rounds += 1
        return True

    async def broken() -> bool:
        raise ConnectionError("refused")

    async def stuck() -> bool:
        await asyncio.Event().wait()
        return True

    probes = {"kafka": up, "postgres": broken, "cache": stuck}
    watch = asyncio.create_task(watch_dependencies(health, probes, interval=0.05))
    try:
        for _ in range(400):  # a second round has begun: the first one was judged whole
            if rounds >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        watch.cancel()
    assert rounds >= 2
    assert health.state == {"kafka": True, "postgres": False, "cache": False}
    assert not health.ready


async def test_a_background_task_is_cancelled_when_the_body_ends() -> None:
    state: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            state.append("cancelled")

    async with background(forever(), "forever"):
        await asyncio.sleep(0)
    assert state == ["cancelled"]


async def test_a_task_that_ignores_its_cancel_is_left_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()

    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(2):
            async with background(stubborn(), "stubborn", stop_within=0.05):
                await asyncio.sleep(0)
    assert "background task stubborn did not stop within 0.05 s" in caplog.text
    release.set()


async def test_a_task_that_failed_shows_its_error_on_the_way_out() -> None:
    async def broken() -> None:
        raise RuntimeError("hub broke")

    with pytest.raises(RuntimeError, match="hub broke"):
        async with background(broken(), "broken"):
            await asyncio.sleep(0.01)


def test_readiness_needs_only_what_the_requests_need() -> None:
    health = Health("test", ["kafka", "postgres"], needed=["postgres"])
    health.set("postgres", True)
    assert health.ready, "Kafka down alone keeps the service in the load balancer"
    health.set("kafka", True)
    health.set("postgres", False)
    assert not health.ready
    assert Health("edge", ["kafka"], needed=[]).ready
