"""run_load end to end against a tiny loopback server: every vote is sent and recorded."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bench.loadgen import NAT_ADDRESS, Kind, LoadConfig, Mix, SentVote, run_load

SECRET = "c" * 40


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request with 202 and a vote id, or 401 without a bearer token."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
            )
            await reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("authorization", "").startswith("Bearer "):
                status, body = "202 Accepted", {"vote_id": str(uuid.uuid4()), "status": "pending"}
            else:
                status, body = "401 Unauthorized", {"code": "invalid_token"}
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _minting(server_url: str, **settings: Any) -> LoadConfig:
    """Votes with minted sessions and captchas, as the benchmarks send them."""
    return LoadConfig(
        base_url=server_url,
        poll_id="p",
        sessions="mint",
        captchas="mint",
        captcha_secret=SECRET,
        voter_token_secret="v" * 40,
        **settings,
    )


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_every_vote_is_recorded_with_its_outcome(server_url: str) -> None:
    report = await run_load(_minting(server_url, rate=2_000, count=200, seed=3))
    assert len(report.sent) == 200
    assert [vote.seq for vote in report.sent] == list(range(200))
    assert len(report.acknowledged) == 200
    assert all(vote.vote_id for vote in report.acknowledged)
    assert len({vote.vote_id for vote in report.acknowledged}) == 200
    assert report.book.statuses == {202: 200}
    assert report.book.histogram.get_total_count() == 200
    assert report.dispatch_lag.get_total_count() == 200
    # Repeats are sent by voters who voted earlier in the run.
    first_vote: dict[str, SentVote] = {}
    for vote in report.sent:
        first_vote.setdefault(vote.voter_id, vote)
        if vote.kind is Kind.REPEAT:
            assert first_vote[vote.voter_id].seq < vote.seq
    assert any(vote.client_ip == NAT_ADDRESS for vote in report.sent)


async def test_refusals_are_kept_with_their_code(server_url: str) -> None:
    config = LoadConfig(
        base_url=server_url,
        poll_id="p",
        rate=1_000,
        count=20,
        sessions="mint",
        captchas="mint",
        captcha_secret=SECRET,
        voter_token_secret="v" * 40,
        path="/api/v1/polls/p/votes",
    )
    report = await run_load(config)
    assert len(report.acknowledged) == 20
    assert report.refused == []


async def test_an_unreachable_server_is_recorded_as_no_answer() -> None:
    config = LoadConfig(
        base_url="http://127.0.0.1:9",
        poll_id="p",
        rate=1_000,
        count=5,
        sessions="mint",
        captchas="mint",
        captcha_secret=SECRET,
        voter_token_secret="v" * 40,
        mix=Mix.only_valid(),
    )
    report = await run_load(config)
    assert [vote.status for vote in report.sent] == [0] * 5
    assert all(vote.code and vote.code.startswith("no_answer") for vote in report.sent)
    assert report.book.errors() == 5
    assert report.acknowledged == []


async def test_a_stopped_run_reports_only_the_votes_it_sent(server_url: str) -> None:
    config = _minting(server_url, rate=200, duration=30, seed=4)
    stop, started = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(run_load(config, stop=stop, started=started))
    await asyncio.wait_for(started.wait(), timeout=30)
    await asyncio.sleep(0.5)
    stop.set()
    report = await asyncio.wait_for(run, timeout=10)
    assert 20 <= len(report.sent) < 30 * 200 / 4
    assert [vote.seq for vote in report.sent] == list(range(len(report.sent)))
    assert len(report.acknowledged) == len(report.sent)
    assert report.book.histogram.get_total_count() == len(report.sent)


async def test_the_votes_of_a_run_are_out_of_the_collectors_reach_while_it_sends(
    server_url: str,
) -> None:
    config = _minting(server_url, rate=200, duration=30, seed=5)
    stop, started = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(run_load(config, stop=stop, started=started))
    await asyncio.wait_for(started.wait(), timeout=30)
    frozen_while_sending = gc.get_freeze_count()
    stop.set()
    await asyncio.wait_for(run, timeout=10)
    assert frozen_while_sending >= 30 * 200  # a record per planned vote, at least
    assert gc.get_freeze_count() == 0
