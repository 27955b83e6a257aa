"""Talk to the stack through the gateway the way a voter's browser or a script does.

Plain HTTP with httpx, never a proxy from the environment. Captchas are answered the way
the load generator and rehearsals answer them: from the secret and the id the API handed
out (`shared.captcha.expected_answer`), since a test cannot read the picture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from shared.auth import VoterTokens
from shared.captcha import expected_answer

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Voter:
    """A voter identity: the bearer token and the voter id it names."""

    token: str
    voter_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Captcha:
    captcha_id: str
    answer: str


def gateway_client(gateway_url: str, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(base_url=gateway_url, timeout=timeout, trust_env=False)


def client_from(gateway_url: str, source: str) -> httpx.Client:
    """A client on the gateway whose requests come from the loopback address `source`
    (the gateway bounds some calls per client address)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=gateway_url, transport=transport, trust_env=False, timeout=10)


def async_client_from(gateway_url: str, source: str) -> httpx.AsyncClient:
    """:func:`client_from`, for asyncio."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=gateway_url, transport=transport, trust_env=False)


def new_voter(client: httpx.Client) -> Voter:
    """An anonymous device identity from POST /api/v1/session."""
    response = client.post("/api/v1/session")
    assert response.status_code == 201, f"session: {response.status_code} {response.text}"
    body = response.json()
    return Voter(body["voter_token"], body["voter_id"])


def minted_voter(voter_token_secret: str, now: datetime | None = None) -> Voter:
    """A token minted with the configured key, as an external sign-in (SMS, WeChat) would."""
    issued = VoterTokens(voter_token_secret).issue(now or datetime.now(UTC))
    return Voter(issued.token, issued.voter_id)


def new_captcha(client: httpx.Client, captcha_secret: str) -> Captcha:
    response = client.post("/api/v1/captcha")
    assert response.status_code == 201, f"captcha: {response.status_code} {response.text}"
    captcha_id = response.json()["captcha_id"]
    return Captcha(captcha_id, expected_answer(captcha_secret, captcha_id))


def vote_body(choice: str, captcha: Captcha) -> dict[str, str]:
    return {"choice": choice, "captcha_id": captcha.captcha_id, "captcha_answer": captcha.answer}


def cast_vote(
    client: httpx.Client,
    poll_id: str,
    voter: Voter,
    choice: str,
    captcha: Captcha,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return client.post(
        f"/api/v1/polls/{poll_id}/votes",
        json=vote_body(choice, captcha),
        headers={**voter.auth, **(headers or {})},
    )


def vote_as_a_new_voter(gateway_url: str, poll_id: str, captcha_secret: str, choice: str) -> None:
    """One vote on `poll_id` from a new voter, through the gateway; fails unless taken."""
    with gateway_client(gateway_url) as client:
        captcha = new_captcha(client, captcha_secret)
        response = cast_vote(client, poll_id, new_voter(client), choice, captcha)
        assert response.status_code == 202, response.text


def open_poll(client: httpx.Client) -> dict[str, Any]:
    """The first poll of the catalog that is open now and shows live results."""
    response = client.get("/api/v1/polls")
    assert response.status_code == 200, response.text
    for poll in response.json()["polls"]:
        if poll["state"] == "open" and poll["results"] == "live":
            found: dict[str, Any] = poll
            return found
    raise AssertionError(f"the catalog has no open poll with live results: {response.text}")


def results(client: httpx.Client, poll_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/polls/{poll_id}/results")
    assert response.status_code == 200, f"results: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def vote_status(client: httpx.Client, vote_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/votes/{vote_id}")
    assert response.status_code == 200, f"status: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def wait_for_decision(client: httpx.Client, vote_id: str, within: float = 20.0) -> dict[str, Any]:
    """The vote's status once antifraud decided it (accepted or rejected)."""
    found: dict[str, Any] = {}

    def decided() -> bool:
        found.update(vote_status(client, vote_id))
        return bool(found["status"] != "pending")

    eventually(decided, within=within, what=f"a decision on vote {vote_id}")
    return found


def eventually(
    check: Callable[[], bool], *, within: float, what: str, interval: float = 0.05
) -> float:
    """Poll `check` until it holds and return how long that took; fail naming `what`."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within:.1f} s waiting for {what}")
        time.sleep(interval)


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 problem answer with the given status and a stable `code`."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: expected {status}, "
        f"got {response.status_code}: {response.text[:300]}"
    )
    return assert_problem_shape(response, code)


def assert_problem_shape(response: httpx.Response, code: str | None = None) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    assert content_type.startswith(PROBLEM_JSON), (
        f"{response.status_code} answered as {content_type!r}, not {PROBLEM_JSON}: "
        f"{response.text[:300]}"
    )
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("code"), str) and body["code"], f"no code: {body}"
    assert body.get("status") == response.status_code, f"status field disagrees: {body}"
    if code is not None:
        assert body["code"] == code, f"expected code {code!r}: {body}"
    return body


def poll_day(poll: dict[str, Any], at: datetime) -> date:
    """The voting day of instant `at` in the poll's time zone (contract section 6)."""
    return at.astimezone(ZoneInfo(poll["timezone"])).date()


def next_day_starts(poll: dict[str, Any], day: date) -> datetime:
    """When the day after `day` begins in the poll's time zone, as a UTC instant."""
    zone = ZoneInfo(poll["timezone"])
    return datetime.combine(day + timedelta(days=1), clock(0), zone).astimezone(UTC)


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
