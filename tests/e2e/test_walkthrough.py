"""A voter's walk through the public API, with plain HTTP through the gateway.

Session, captcha, vote, the decision and the results, as a phone's browser or a `curl`
user sees them; then what happens to that voter when something is wrong: a second vote
the same day, a forged or expired token, a spoofed client address, the broker down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from aiokafka import AIOKafkaConsumer

from shared.auth import AUDIENCE, ISSUER, VoterTokens
from tests.stackctl import StackControl
from tests.support.http import (
    Voter,
    assert_problem,
    cast_vote,
    client_from,
    eventually,
    new_captcha,
    new_voter,
    next_day_starts,
    open_poll,
    parse_utc,
    poll_day,
    results,
    vote_status,
    wait_for_decision,
)

pytestmark = pytest.mark.e2e

# Issue 2: a vote shows in the results within 2 seconds of its 202.
COUNTED_WITHIN = 2.0
# Issue 3: with the broker gone ingest answers 503 within 2 s. The client also pays the
# gateway hop and, on a busy 2-core machine, some scheduling: 0.25 s on top.
BROKER_DOWN_WITHIN = 2.0
CLIENT_SLACK = 0.25
# After the broker is back, votes must be taken again within this long.
HEALED_WITHIN = 30.0
SPOOFED_ADDRESS = "203.0.113.77"


@pytest.fixture
def poll(client: httpx.Client) -> dict[str, Any]:
    return open_poll(client)


def _counted(client: httpx.Client, poll_id: str, choice: str) -> int:
    count: int = results(client, poll_id)["counts"].get(choice, 0)
    return count


def _vote_accepted(
    client: httpx.Client, poll: dict[str, Any], voter: Voter, choice: str, captcha_secret: str
) -> str:
    response = cast_vote(client, poll["id"], voter, choice, new_captcha(client, captcha_secret))
    assert response.status_code == 202, response.text
    vote_id: str = response.json()["vote_id"]
    assert wait_for_decision(client, vote_id)["status"] == "accepted"
    return vote_id


def test_a_vote_is_taken_decided_and_counted_within_two_seconds(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str
) -> None:
    voter = new_voter(client)
    captcha = new_captcha(client, captcha_secret)
    choice = poll["options"][0]
    before = _counted(client, poll["id"], choice)

    sent_at = datetime.now(UTC)
    response = cast_vote(client, poll["id"], voter, choice, captcha)
    accepted_at = time.monotonic()

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert body["status_url"] == f"/api/v1/votes/{body['vote_id']}"
    assert response.headers["Location"] == body["status_url"]
    assert response.headers["Cache-Control"] == "no-store"

    def counted() -> bool:
        return _counted(client, poll["id"], choice) >= before + 1

    eventually(counted, within=COUNTED_WITHIN * 3, what="the vote in the results")
    took = time.monotonic() - accepted_at
    assert took <= COUNTED_WITHIN, f"the vote showed in the results after {took:.2f} s"

    status = client.get(body["status_url"])
    assert status.status_code == 200
    decision = status.json()
    assert decision["vote_id"] == body["vote_id"]
    assert decision["poll_id"] == poll["id"]
    assert decision["status"] == "accepted", decision
    assert decision["reason"] is None
    days = {poll_day(poll, sent_at).isoformat(), poll_day(poll, datetime.now(UTC)).isoformat()}
    assert decision["day"] in days, f"{decision['day']} is not the poll's day ({days})"


@pytest.mark.parametrize(
    "vote_id",
    [
        "5f0c6a4e-2b1d-4c8e-9a7f-3d2e1c0b9a88",  # a version-4 UUID: not one the ingest makes
        "7fffffff-ffff-7fff-bfff-ffffffffffff",  # a UUIDv7 of the year 6429
        "not-a-vote-id",
    ],
)
def test_a_status_url_no_vote_was_issued_gets_404_not_pending_forever(
    client: httpx.Client, vote_id: str
) -> None:
    response = client.get(f"/api/v1/votes/{vote_id}")
    assert_problem(response, 404, "unknown_vote")


# The gateway answers this many lookups from one address at once before it slows them
# to its rate (deploy/local/nginx.conf.in): room for a carrier NAT address's voters.
LOOKUP_BURST = 1000


def test_a_flood_of_lookups_from_one_address_gets_429_and_its_neighbours_do_not(
    gateway_url: str, poll: dict[str, Any]
) -> None:
    # Each look at a vote's decision or a draw entry is a database read.
    with client_from(gateway_url, "127.0.0.60") as flooder:
        answered = 0
        refused: httpx.Response | None = None
        while refused is None and answered < 20 * LOOKUP_BURST:
            response = flooder.get("/api/v1/votes/not-a-vote-id")
            if response.status_code == 429:
                refused = response
            else:
                assert_problem(response, 404, "unknown_vote")
                answered += 1
        assert refused is not None, f"{answered} lookups from one address, none refused"
        assert answered >= LOOKUP_BURST
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        # The draw's reads share the budget: back to back, they are refused too.
        draws = [flooder.get(f"/api/v1/polls/{poll['id']}/lottery") for _ in range(20)]
        assert 429 in {r.status_code for r in draws}

    with client_from(gateway_url, "127.0.0.61") as neighbour:
        assert_problem(neighbour.get("/api/v1/votes/not-a-vote-id"), 404, "unknown_vote")
        draw = neighbour.get(f"/api/v1/polls/{poll['id']}/lottery")
        assert draw.status_code != 429, draw.text


def test_a_second_vote_the_same_day_is_refused_with_when_to_come_back(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str
) -> None:
    voter = new_voter(client)
    first, second = poll["options"][0], poll["options"][-1]
    _vote_accepted(client, poll, voter, first, captcha_secret)
    before = _counted(client, poll["id"], second)

    response = cast_vote(client, poll["id"], voter, second, new_captcha(client, captcha_secret))
    assert response.status_code == 202, "the edge takes it; antifraud decides"
    decision = wait_for_decision(client, response.json()["vote_id"])

    assert decision["status"] == "rejected", decision
    assert decision["reason"] == "daily_limit"
    day = datetime.fromisoformat(decision["day"]).date()
    assert parse_utc(decision["next_vote_at"]) == next_day_starts(poll, day), decision
    time.sleep(1.5)  # results are re-read once a second: give a wrong count time to show
    assert _counted(client, poll["id"], second) == before, "a refused vote was counted"


def _forged_token(voter_id: str) -> str:
    claims = {
        "sub": voter_id,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": datetime.now(UTC) + timedelta(days=1),
    }
    return jwt.encode(claims, "not-the-configured-secret-but-long-enough!", algorithm="HS256")


def _unsigned_token(voter_id: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    exp = int((datetime.now(UTC) + timedelta(days=1)).timestamp())
    claims = {"sub": voter_id, "iss": ISSUER, "aud": AUDIENCE, "exp": exp}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("kind", "code"),
    [("forged", "invalid_token"), ("unsigned", "invalid_token"), ("expired", "token_expired")],
)
def test_a_bad_voter_token_gets_401(
    client: httpx.Client,
    poll: dict[str, Any],
    captcha_secret: str,
    voter_token_secret: str,
    kind: str,
    code: str,
) -> None:
    real = new_voter(client)
    if kind == "forged":
        token = _forged_token(real.voter_id)
    elif kind == "unsigned":
        token = _unsigned_token(real.voter_id)
    else:
        long_ago = datetime.now(UTC) - timedelta(days=3)
        token = VoterTokens(voter_token_secret).issue(long_ago, ttl=timedelta(days=1)).token
    voter = Voter(token, real.voter_id)

    vote = cast_vote(
        client, poll["id"], voter, poll["options"][0], new_captcha(client, captcha_secret)
    )
    assert_problem(vote, 401, code)
    entry = client.get(f"/api/v1/polls/{poll['id']}/lottery/entry", headers=voter.auth)
    assert_problem(entry, 401)


def test_a_vote_without_a_token_gets_401(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str
) -> None:
    captcha = new_captcha(client, captcha_secret)
    body = {"choice": poll["options"][0], "captcha_id": captcha.captcha_id}
    response = client.post(
        f"/api/v1/polls/{poll['id']}/votes", json={**body, "captcha_answer": captcha.answer}
    )
    assert_problem(response, 401)


async def _submitted_event(bootstrap: str, vote_id: str, within: float = 20.0) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        "votes.submitted",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    event: dict[str, Any] = json.loads(record.value)
                    if event.get("vote_id") == vote_id:
                        return event
    finally:
        await consumer.stop()
    raise AssertionError(f"vote {vote_id} is not on votes.submitted after {within:.0f} s")


def test_a_spoofed_forwarded_for_is_not_the_address_ingest_records(
    client: httpx.Client,
    poll: dict[str, Any],
    captcha_secret: str,
    gateway_url: str,
    kafka_bootstrap: str,
) -> None:
    spoofed = {
        "X-Forwarded-For": f"{SPOOFED_ADDRESS}, 198.51.100.1",
        "X-Real-IP": SPOOFED_ADDRESS,
        "Forwarded": f"for={SPOOFED_ADDRESS}",
    }
    voter = new_voter(client)
    captcha = new_captcha(client, captcha_secret)
    response = cast_vote(client, poll["id"], voter, poll["options"][0], captcha, headers=spoofed)
    assert response.status_code == 202, response.text

    event = asyncio.run(_submitted_event(kafka_bootstrap, response.json()["vote_id"]))

    # The test talks to the gateway over loopback: that socket address is the client's.
    assert event["client_ip"] == urlsplit(gateway_url).hostname, event["client_ip"]
    assert event["client_ip"] not in (SPOOFED_ADDRESS, "198.51.100.1")


@contextlib.contextmanager
def broker_down(stack: StackControl) -> Iterator[None]:
    """Kafka stopped inside the block; started again (and awaited) whatever happens."""
    stack.stop("kafka")
    try:
        yield
    finally:
        stack.start("kafka")


def _refused_while_broker_down(
    client: httpx.Client, poll: dict[str, Any], voter: Voter, captcha_secret: str
) -> float:
    captcha = new_captcha(client, captcha_secret)
    started = time.monotonic()
    response = cast_vote(client, poll["id"], voter, poll["options"][1], captcha)
    took = time.monotonic() - started
    assert_problem(response, 503, "broker_unavailable")
    assert response.headers.get("Retry-After"), "a 503 tells the client when to retry"
    return took


def _retry_until_taken(
    client: httpx.Client, poll: dict[str, Any], voter: Voter, captcha_secret: str
) -> str:
    taken: list[httpx.Response] = []

    def vote_taken() -> bool:
        captcha = new_captcha(client, captcha_secret)
        response = cast_vote(client, poll["id"], voter, poll["options"][1], captcha)
        if response.status_code == 202:
            taken.append(response)
            return True
        assert_problem(response, 503)
        return False

    eventually(vote_taken, within=HEALED_WITHIN, what="a vote taken again", interval=0.5)
    vote_id: str = taken[0].json()["vote_id"]
    return vote_id


@pytest.mark.slow
def test_with_the_broker_down_a_vote_gets_a_fast_503_and_voting_heals(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str, stack: StackControl
) -> None:
    choice = poll["options"][1]
    with broker_down(stack):
        took = max(
            _refused_while_broker_down(client, poll, new_voter(client), captcha_secret)
            for _ in range(2)
        )
        assert took <= BROKER_DOWN_WITHIN + CLIENT_SLACK, f"the 503 took {took:.2f} s"

    before = _counted(client, poll["id"], choice)
    voter = new_voter(client)
    vote_id = _retry_until_taken(client, poll, voter, captcha_secret)
    assert wait_for_decision(client, vote_id, within=HEALED_WITHIN)["status"] == "accepted"
    eventually(
        lambda: _counted(client, poll["id"], choice) >= before + 1,
        within=HEALED_WITHIN,
        what="the vote taken after the outage in the results",
    )


def _readiness(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/readyz", timeout=5)
    return response.status_code, response.json()


@pytest.mark.slow
def test_with_the_broker_down_every_service_stays_ready_for_its_requests(
    client: httpx.Client,
    poll: dict[str, Any],
    stack: StackControl,
    service_urls: dict[str, str],
) -> None:
    """Kafka is not needed to serve a page, a result or a lookup: no service leaves the
    load balancer for it (in Kubernetes that would put the ingress's own error page in
    place of the voting page); each reports it down."""
    with broker_down(stack):

        def kafka_seen_down() -> bool:
            return all(
                _readiness(url)[1]["dependencies"]["kafka"] is False
                for url in service_urls.values()
            )

        eventually(kafka_seen_down, within=HEALED_WITHIN, what="every service to see Kafka down")
        for name, url in service_urls.items():
            assert _readiness(url)[0] == 200, name
        assert client.get(f"/polls/{poll['id']}").status_code == 200
        assert client.get(f"/api/v1/polls/{poll['id']}/results").status_code == 200


@pytest.mark.slow
def test_a_vote_refused_with_503_is_not_stored_so_its_retry_counts(
    client: httpx.Client, poll: dict[str, Any], captcha_secret: str, stack: StackControl
) -> None:
    """The 503 says "nothing was stored, please retry": the voter's retry must count.

    If the refused vote reached the log after all, the retry is refused as a second vote
    of the day, and the voter loses the vote they were told to cast again.
    """
    voter = new_voter(client)
    with broker_down(stack):
        _refused_while_broker_down(client, poll, voter, captcha_secret)

    vote_id = _retry_until_taken(client, poll, voter, captcha_secret)
    decision = wait_for_decision(client, vote_id, within=HEALED_WITHIN)
    assert decision["status"] == "accepted", (
        f"the retry after a 503 was {decision['status']} ({decision['reason']}): "
        "the vote refused with 503 was stored after all"
    )
    time.sleep(1.5)
    assert vote_status(client, vote_id)["status"] == "accepted"
