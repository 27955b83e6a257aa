"""The ingest benchmark's floor: what it measures and how the report weighs it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench import floor, report
from shared.auth import VoterTokens

SECRET = "s" * 40


def _ingest_part(floor_found: dict[str, Any] | None, bare_cpu_ms: float) -> dict[str, Any]:
    def search(max_rate: float, cpu_ms: float) -> dict[str, Any]:
        at_70 = {"rate": max_rate * 0.7, "held": True, "server_cpu_ms_per_request": cpu_ms}
        return {
            "max_rate": max_rate,
            "at_70": at_70,
            "steps": [],
            "ceiling_generator_limited": True,
        }

    part: dict[str, Any] = {
        "ingest": search(2_000.0, 0.35),
        "bare": search(16_000.0, bare_cpu_ms),
        "ratio": 0.125,
        "rule": {"max_error_fraction": 0.01, "max_p99_ms": 250.0, "min_completion": 0.97},
        "plan": {"step_seconds": 10, "factor": 1.5, "refine_steps": 2, "measure_seconds": 30},
    }
    if floor_found is not None:
        part["floor"] = floor_found
    return part


def _floor(token_us: float, send_us: float, failures: int = 0) -> dict[str, Any]:
    found = floor.Floor(
        rate=8_000.0,
        token_check_us=token_us,
        send_cpu_us=send_us + 20,
        schedule_cpu_us=20.0,
        sends=48_000,
        send_failures=failures,
    )
    return found.to_dict()


def _section(text: str) -> str:
    start = text.index("### What 0.5x asks of the edge")
    return text[start : text.index("A step holds")]


def test_the_floor_is_weighed_against_the_budget_of_the_target() -> None:
    # 8,000 votes/s leave 125 us a vote; 58 + 37 + 35 = 130 is over it.
    text = "\n".join(report._ingest(_ingest_part(_floor(37.0, 35.0), bare_cpu_ms=0.058)))
    section = _section(text)
    assert "0.5x of the bare endpoint's maximum is 8,000 votes/s: 125 µs" in section
    assert "| the HTTP stack (the bare endpoint's CPU per request at 70%) | 58.0 |" in section
    assert "| verifying a voter token not seen before (PyJWT, HS256) | 37.0 |" in section
    assert "8,000 a second (acks=all, less its task's scheduling) | 35.0 |" in section
    assert "| together | 130.0 |" in section
    assert "| budget per vote at 0.5x | 125.0 |" in section
    assert "These alone take more than the budget" in section
    assert "vote_ingest's CPU per vote at 70%: 350 µs" in section
    assert "sends failed" not in section


def test_a_floor_under_the_budget_says_what_it_leaves() -> None:
    text = "\n".join(report._ingest(_ingest_part(_floor(10.0, 15.0, failures=3), 0.05)))
    section = _section(text)
    assert "| together | 75.0 |" in section
    assert "They leave 50 µs per vote for everything else the edge does" in section
    assert "take more than the budget" not in section
    assert "3 of the 48,000 sends failed." in section


def test_no_floor_no_section() -> None:
    text = "\n".join(report._ingest(_ingest_part(None, 0.058)))
    assert "asks of the edge" not in text


def test_token_check_verifies_a_token_never_seen_before_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    verify = VoterTokens.verify

    def counting(self: VoterTokens, token: str) -> str:
        seen.append(token)
        return verify(self, token)

    monkeypatch.setattr(VoterTokens, "verify", counting)
    assert floor.token_check_us(SECRET, 50) > 0
    assert len(seen) == 50
    assert len(set(seen)) == 50


async def test_paced_tasks_start_at_the_rate_and_all_run() -> None:
    started: list[float] = []

    async def work(i: int) -> None:
        started.append(time.perf_counter())
        await asyncio.sleep(0)

    cpu_us = await floor.paced_cpu_us(200.0, 21, work)
    assert len(started) == 21
    # 21 starts at 200 a second span 100 ms at least: an open model, not a burst.
    assert started[-1] - started[0] >= 0.099
    assert cpu_us > 0
