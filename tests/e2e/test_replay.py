"""`make replay` in small: a few hundred people's campaign through the running stack.

The replay adds its own rehearsal poll to the stack's catalog and rolls the services
(scripts/replay.py says why), so nothing here meets another test's poll.
"""

from __future__ import annotations

import os
import uuid

import pytest

from scripts.replay import ReplayConfig, StackEnv, replay

pytestmark = pytest.mark.e2e

FRAUD_REASONS = {
    "captcha_wrong",
    "captcha_reused",
    "rate_limited_ip",
    "rate_limited_voter",
    "daily_limit",
}


async def test_a_small_replay_draws_a_verifiable_draw_and_refuses_the_fraud() -> None:
    lines: list[str] = []
    config = ReplayConfig(
        voters=250,
        seed=7,
        lead=30.0,
        live_votes=6,
        external_entropy="rehearsal: closing price of the day",
        run_id=f"t{uuid.uuid4().hex[:8]}",
    )

    report = await replay(StackEnv.from_env(os.environ), config, lines.append)

    printed = "\n".join(lines)
    assert report.verified, printed
    assert report.failures == [], printed
    assert report.fraud_planned > 0
    assert report.fraud_rejected == report.fraud_planned, printed
    assert FRAUD_REASONS <= set(report.rejected), printed
    winners = [w for w in report.winners if w["role"] == "winner"]
    assert len(winners) == 30
    assert all("****" in w["phone_masked"] for w in report.winners)
    assert report.histogram.get(0, 0) > 0  # entered, never voted: not eligible
    assert max(report.histogram) >= 10  # the daily voters
