"""A service stops its parts in order, each bounded in time, whatever happens to one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.service import Part, stopping


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def part(self, name: str, *, hangs: bool = False, fails: bool = False) -> Part:
        async def stop() -> None:
            self.calls.append(f"stop {name}")
            if hangs:
                await asyncio.Event().wait()
            if fails:
                raise RuntimeError(f"{name} broke")

        return Part(name, stop, lambda: self.calls.append(f"abort {name}"))


async def test_parts_stop_in_order_after_the_body() -> None:
    rec = Recorder()
    async with stopping(rec.part("consumer"), rec.part("pool")):
        rec.calls.append("serving")
    assert rec.calls == ["serving", "stop consumer", "stop pool"]


async def test_a_hung_part_is_aborted_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    with caplog.at_level(logging.WARNING):
        async with stopping(rec.part("consumer", hangs=True), rec.part("pool"), per_part=0.05):
            pass
    assert rec.calls == ["stop consumer", "abort consumer", "stop pool"]
    assert "consumer did not stop within" in caplog.text


async def test_a_failing_part_is_logged_and_the_body_error_still_propagates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="body"), caplog.at_level(logging.ERROR):
        async with stopping(rec.part("producer", fails=True), rec.part("pool")):
            raise ValueError("body")
    assert rec.calls == ["stop producer", "stop pool"]
    assert "stopping producer failed" in caplog.text


async def test_a_stop_that_swallows_its_cancel_cannot_hold_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def stubborn() -> None:
        rec.calls.append("stop consumer")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # a client's cleanup that ignores the cancel

    consumer = Part("consumer", stubborn, lambda: rec.calls.append("abort consumer"))
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(2):
            async with stopping(consumer, rec.part("pool"), per_part=0.05):
                pass
    assert rec.calls == ["stop consumer", "abort consumer", "stop pool"]
    assert "consumer did not stop within" in caplog.text
    release.set()
