"""A short `make chaos`: a crash and a broker restart under load, reconciled exactly.

Each test sends votes through the gateway while one fault happens, waits for the
pipeline to drain, then checks every vote against votes.submitted, antifraud.decisions,
the decision topics, tally.counted_votes, tally.counts and lottery.voter_days: nothing
acknowledged is lost, nothing is counted twice, no refused vote is stored.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from scripts.chaos import ChaosEnv, Scenario, ScenarioResult, details, run_scenario
from scripts.reconcile_votes import Decided, Evidence, SentVote, reconcile
from tests.conftest import random_vote_id, random_voter_id

pytestmark = pytest.mark.slow

RATE = 8.0  # votes per second: modest, so the 2-core machine keeps up while faulted
SECONDS = 30.0  # the fault at 10 s; a broker restart takes 10-15 s


@pytest.fixture
def chaos_env(
    gateway_url: str,
    database_url: str,
    kafka_bootstrap: str,
    captcha_secret: str,
    voter_token_secret: str,
    stack_run_dir: Path,
) -> ChaosEnv:
    return ChaosEnv(
        gateway_url,
        database_url,
        kafka_bootstrap,
        captcha_secret,
        voter_token_secret,
        stack_run_dir,
    )


def assert_exact(result: ScenarioResult) -> None:
    r = result.reconciliation
    report = details([result])
    # Not vacuous: votes went through, and kept going through once the fault was over.
    assert r.accepted > 0, report
    assert result.after_recovery.sent > 0, report
    assert result.after_recovery.ok, report
    assert result.drain.drained, report
    assert result.fault.error is None, report
    assert r.decided == r.acknowledged, report
    assert r.counted == r.accepted, report
    assert r.days_recorded == r.accepted, report
    assert r.lost == 0, report
    assert r.duplicated == 0, report
    assert r.phantom == 0, report
    assert r.misjudged == 0, report


async def test_a_crashed_tally_counts_every_accepted_vote_once(chaos_env: ChaosEnv) -> None:
    result = await run_scenario(
        chaos_env, Scenario("kill", "tally"), rate=RATE, seconds=SECONDS, drain_timeout=60
    )
    assert_exact(result)


async def test_a_broker_restart_loses_no_acknowledged_vote(chaos_env: ChaosEnv) -> None:
    result = await run_scenario(
        chaos_env,
        Scenario("restart", "kafka"),
        rate=RATE,
        seconds=SECONDS,
        down_seconds=1,
        drain_timeout=60,
    )
    assert_exact(result)


def test_the_reconciliation_sees_a_lost_and_a_double_counted_vote() -> None:
    """The checks above can fail: fed a lost vote and a double count, they say so."""
    kept, dropped = random_vote_id(), random_vote_id()
    alice, bob, carol = random_voter_id(), random_voter_id(), random_voter_id()
    today = date(2026, 1, 1)
    sent = [
        SentVote(alice, "valid", 202, vote_id=kept),
        SentVote(bob, "valid", 202, vote_id=dropped),
        SentVote(carol, "valid", 503, code="broker_unavailable"),
    ]
    phantom = random_vote_id()
    evidence = Evidence(
        decisions={
            kept: Decided(alice, "accepted", None, "good", today),
            phantom: Decided(carol, "rejected", "captcha_wrong", "good", None),
        },
        accepted_topic=Counter({kept: 2}),
        rejected_topic=Counter({phantom: 1}),
        counted={kept},
        counts_before={"good": 10},
        counts_after={"good": 12},  # one accepted vote moved the total by two
        days={(alice, today): kept},
    )
    result = reconcile(sent, evidence)
    assert result.acknowledged == 2
    assert result.decided == 1
    assert result.lost == 1
    assert any(p.vote_id == dropped for p in result.lost_problems)
    assert result.duplicated == 1
    assert result.phantom == 1
    assert result.topic_duplicates == 1
    assert not result.ok
