"""The ingest edge in-process with a recording publisher: what voters and bots get back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from services.vote_ingest.http import SPEAKING_AT_ONCE, Edge, SpeakCaptcha
from shared.auth import AUDIENCE, ISSUER, VoterTokens
from shared.captcha import CaptchaPool, CaptchaVerdict, expected_answer, issue
from shared.catalog import Catalog, parse_catalog
from shared.events import VoteSubmitted
from shared.http import Health, build_app
from shared.netaddr import parse_networks

# Token expiry is checked against the real clock, so the polls are placed around it.
NOW = datetime.now(UTC).replace(microsecond=0)


def _at(days: int) -> str:
    return (NOW + timedelta(days=days)).isoformat()


SECRET = "t" * 40
CAPTCHA_SECRET = "c" * 40

CATALOG = parse_catalog(
    f"""
polls:
  - id: open-poll
    title: Open
    options: [excellent, good, fair, poor]
    opens_at: {_at(-3)}
    closes_at: {_at(10)}
    translations: {{en: {{title: Open in English}}}}
  - id: closed-poll
    title: Closed
    options: [excellent, good, fair, poor]
    opens_at: {_at(-30)}
    closes_at: {_at(-1)}
  - id: later-poll
    title: Later
    options: [excellent, good, fair, poor]
    opens_at: {_at(2)}
    closes_at: {_at(20)}
"""
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[VoteSubmitted] = []
        self.fail = False

    async def __call__(self, event: VoteSubmitted) -> None:
        if self.fail:
            raise TimeoutError("broker did not acknowledge")
        self.events.append(event)


async def take_captcha() -> tuple[str, str, datetime]:
    captcha_id = issue(CAPTCHA_SECRET, NOW)
    return captcha_id, "data:image/png;base64,", NOW + timedelta(minutes=5)


def make_app(
    recorder: Recorder,
    catalog: Catalog = CATALOG,
    trusted: str = "10.0.0.1/32",
    speak_captcha: SpeakCaptcha | None = None,
) -> Starlette:
    edge = Edge(
        catalog,
        VoterTokens(SECRET),
        parse_networks(trusted),
        recorder,
        take_captcha,
        lambda: NOW,
        speak_captcha=speak_captcha or CaptchaPool(CAPTCHA_SECRET, clock=lambda: NOW).speak,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    return build_app("vote_ingest", "test", edge.routes(), Health("vote_ingest", []), lifespan)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def client(app: Starlette, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://edge")


async def session(c: httpx.AsyncClient) -> str:
    response = await c.post("/api/v1/session")
    assert response.status_code == 201
    token: str = response.json()["voter_token"]
    return token


def vote_body(choice: str = "good") -> dict[str, str]:
    captcha_id = issue(CAPTCHA_SECRET, NOW)
    return {
        "choice": choice,
        "captcha_id": captcha_id,
        "captcha_answer": expected_answer(CAPTCHA_SECRET, captcha_id),
    }


async def test_a_valid_vote_is_published_then_answered_202(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        token = await session(c)
        response = await c.post(
            "/api/v1/polls/open-poll/votes",
            json=vote_body(),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "phone"},
        )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["status_url"] == f"/api/v1/votes/{body['vote_id']}"
    [event] = recorder.events
    assert event.vote_id == body["vote_id"]
    assert uuid.UUID(event.vote_id).version == 7
    assert event.received_at == NOW
    assert event.client_ip == "203.0.113.7"
    assert event.voter_id == VoterTokens(SECRET).verify(token)


async def test_a_wrong_method_is_405_naming_the_allowed_ones(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        response = await c.get("/api/v1/polls/open-poll/votes")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"


async def test_broker_failure_is_503_and_nothing_is_claimed(recorder: Recorder) -> None:
    recorder.fail = True
    async with client(make_app(recorder)) as c:
        token = await session(c)
        response = await c.post(
            "/api/v1/polls/open-poll/votes",
            json=vote_body(),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "broker_unavailable"


@pytest.mark.parametrize(
    ("token_of", "code"),
    [
        (lambda: "not-a-jwt", "invalid_token"),
        (
            lambda: jwt.encode(
                {"sub": "v-1", "exp": NOW + timedelta(days=1), "iss": ISSUER, "aud": AUDIENCE},
                "x" * 40,
                algorithm="HS256",
            ),
            "invalid_token",
        ),
        (
            lambda: jwt.encode(
                {
                    "sub": "v-1",
                    "exp": datetime.now(UTC) - timedelta(hours=1),
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                },
                SECRET,
                algorithm="HS256",
            ),
            "token_expired",
        ),
        (
            lambda: jwt.encode(
                {"sub": "v-1", "exp": NOW + timedelta(days=1), "iss": ISSUER, "aud": AUDIENCE},
                "",
                algorithm="none",
            ),
            "invalid_token",
        ),
    ],
)
async def test_forged_or_expired_tokens_get_401(
    recorder: Recorder, token_of: object, code: str
) -> None:
    token = token_of()  # type: ignore[operator]
    async with client(make_app(recorder)) as c:
        response = await c.post(
            "/api/v1/polls/open-poll/votes",
            json=vote_body(),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert recorder.events == []


async def test_a_token_seen_before_still_names_its_voter_and_a_tampered_copy_is_refused(
    recorder: Recorder,
) -> None:
    async with client(make_app(recorder)) as c:
        token = await session(c)
        head, payload, signature = token.split(".")
        forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BA'}"
        statuses = []
        for attempt in (token, token, forged):
            response = await c.post(
                "/api/v1/polls/open-poll/votes",
                json=vote_body(),
                headers={"Authorization": f"Bearer {attempt}"},
            )
            statuses.append(response.status_code)
    assert statuses == [202, 202, 401]
    voter = VoterTokens(SECRET).verify(token)
    assert [e.voter_id for e in recorder.events] == [voter, voter]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/v1/polls/closed-poll/votes", 403, "poll_closed"),
        ("/api/v1/polls/later-poll/votes", 403, "poll_not_open"),
        ("/api/v1/polls/no-such-poll/votes", 404, "unknown_poll"),
    ],
)
async def test_poll_window_and_existence(
    recorder: Recorder, path: str, status: int, code: str
) -> None:
    async with client(make_app(recorder)) as c:
        token = await session(c)
        response = await c.post(
            path, json=vote_body(), headers={"Authorization": f"Bearer {token}"}
        )
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert recorder.events == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[]", "invalid_body"),
        (b'{"choice": "good"}', "invalid_body"),
        (b'{"choice": 1, "captcha_id": "abcdefghij", "captcha_answer": "AB12"}', "invalid_body"),
        (
            b'{"choice": "meh", "captcha_id": "abcdefghij", "captcha_answer": "AB12"}',
            "invalid_choice",
        ),
        (
            b'{"choice": "good", "captcha_id": "abcdefghij", "captcha_answer": "AB12", "x": 1}',
            "invalid_body",
        ),
        (
            b'{"choice": "good", "captcha_id": "'
            + b"\\u2603" * 8
            + b'", "captcha_answer": "AB12"}',
            "captcha_malformed",
        ),
        ("\ufffe\U0001f600".encode("utf-8", "surrogatepass"), "invalid_json"),
    ],
)
async def test_bad_bodies_get_422_problem_json(recorder: Recorder, body: bytes, code: str) -> None:
    async with client(make_app(recorder)) as c:
        token = await session(c)
        response = await c.post(
            "/api/v1/polls/open-poll/votes",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert recorder.events == []


async def test_bodies_over_4_kib_get_413(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        token = await session(c)
        response = await c.post(
            "/api/v1/polls/open-poll/votes",
            content=b"x" * (10 * 1024 * 1024),
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(recorder: Recorder) -> None:
    async with client(make_app(recorder), peer="203.0.113.7") as c:
        token = await session(c)
        await c.post(
            "/api/v1/polls/open-poll/votes",
            json=vote_body(),
            headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": "198.51.100.1"},
        )
    assert [e.client_ip for e in recorder.events] == ["203.0.113.7"]


async def test_forwarded_for_is_used_from_the_trusted_gateway(recorder: Recorder) -> None:
    async with client(make_app(recorder), peer="10.0.0.1") as c:
        token = await session(c)
        await c.post(
            "/api/v1/polls/open-poll/votes",
            json=vote_body(),
            headers={
                "Authorization": f"Bearer {token}",
                "X-Forwarded-For": "198.51.100.1, 10.0.0.1",
            },
        )
    assert [e.client_ip for e in recorder.events] == ["198.51.100.1"]


async def test_sessions_are_rate_limited_per_address(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        statuses = [(await c.post("/api/v1/session")).status_code for _ in range(320)]
    assert statuses.count(201) >= 300
    assert statuses[-1] == 429


async def test_captcha_is_never_cached(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        response = await c.post("/api/v1/captcha")
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    assert set(response.json()) == {"captcha_id", "image", "expires_at"}


async def test_a_captcha_s_answer_is_spoken_as_wav_and_never_cached(recorder: Recorder) -> None:
    captcha_id = issue(CAPTCHA_SECRET, NOW - timedelta(minutes=1))
    async with client(make_app(recorder)) as c:
        response = await c.get(f"/api/v1/captcha/{captcha_id}/audio")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.headers["cache-control"] == "no-store"
    assert response.content[:4] == b"RIFF" and response.content[8:12] == b"WAVE"


@pytest.mark.parametrize(
    ("captcha_id", "status", "code"),
    [
        (issue("x" * 40, NOW), 404, "unknown_captcha"),  # signed with another secret
        ("not-a-captcha-id", 404, "unknown_captcha"),
        (issue(CAPTCHA_SECRET, NOW - timedelta(minutes=5)), 410, "captcha_expired"),
    ],
)
async def test_only_a_genuine_unexpired_captcha_is_spoken(
    recorder: Recorder, captcha_id: str, status: int, code: str
) -> None:
    async with client(make_app(recorder)) as c:
        response = await c.get(f"/api/v1/captcha/{captcha_id}/audio")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_spoken_captchas_are_rate_limited_per_address(recorder: Recorder) -> None:
    app = make_app(recorder)
    async with client(app) as c:
        statuses = [(await c.get("/api/v1/captcha/x/audio")).status_code for _ in range(32)]
    assert statuses[:30] == [404] * 30
    assert statuses[-1] == 429
    async with client(app, peer="198.51.100.9") as other:
        assert (await other.get("/api/v1/captcha/x/audio")).status_code == 404


async def test_only_a_few_answers_are_spoken_at_once(recorder: Recorder) -> None:
    release = asyncio.Event()

    async def slow_speaker(captcha_id: str) -> tuple[CaptchaVerdict, bytes]:
        await release.wait()
        return CaptchaVerdict.OK, b"RIFF"

    app = make_app(recorder, speak_captcha=slow_speaker)
    async with client(app) as c:
        url = f"/api/v1/captcha/{issue(CAPTCHA_SECRET, NOW)}/audio"
        waiting = [asyncio.create_task(c.get(url)) for _ in range(SPEAKING_AT_ONCE)]
        await asyncio.sleep(0.1)
        shed = await c.get(url)
        release.set()
        answered = await asyncio.gather(*waiting)
    assert shed.status_code == 503
    assert shed.json()["code"] == "captcha_audio_busy"
    assert [r.status_code for r in answered] == [200] * SPEAKING_AT_ONCE


async def test_the_catalog_lists_the_texts_it_translated(recorder: Recorder) -> None:
    async with client(make_app(recorder)) as c:
        listed = (await c.get("/api/v1/polls")).json()["polls"]
        one = (await c.get("/api/v1/polls/open-poll")).json()

    by_id = {p["id"]: p for p in listed}
    assert by_id["open-poll"]["title"] == "Open"
    assert by_id["open-poll"]["translations"] == {"en": {"title": "Open in English"}}
    assert by_id["closed-poll"]["translations"] == {}
    assert one["translations"] == by_id["open-poll"]["translations"]
