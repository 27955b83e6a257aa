"""The voter-facing API of the edge: sessions, captchas (seen and heard), the catalog and
vote intake."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka.errors import KafkaError
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.vote_ingest.openapi import openapi_document
from services.vote_ingest.rules import TokenBuckets, parse_vote, require_open
from shared import metric_names as m
from shared.auth import VoterTokens, voter_from_header
from shared.captcha import CaptchaVerdict
from shared.catalog import OPTION_LABELS, Catalog, Poll
from shared.errors import Gone, NotFound, ServiceUnavailable, TooManyRequests
from shared.events import VoteSubmitted, format_utc, new_vote_id
from shared.http import JsonResponse, read_json
from shared.netaddr import Network, client_address

log = logging.getLogger(__name__)

VOTES_SUBMITTED = Counter("votes_submitted_total", "Votes accepted for decision (202)", ["poll"])
SUBMIT_FAILED = Counter("votes_submit_failed_total", "Votes refused at the edge", ["poll", "code"])
CAPTCHAS_ISSUED = Counter("captchas_issued_total", "Captchas handed out")
CAPTCHAS_SPOKEN = Counter(m.CAPTCHAS_SPOKEN_TOTAL, "Captcha answers spoken (audio captchas)")

Publish = Callable[[VoteSubmitted], Awaitable[None]]
TakeCaptcha = Callable[[], Awaitable[tuple[str, str, datetime]]]
SpeakCaptcha = Callable[[str], Awaitable[tuple[CaptchaVerdict, bytes]]]

# Speaking an answer costs about 0.2 s of a worker's CPU: few voters need it, so a
# replica makes only this many at once and sheds the rest with a 503 to retry.
SPEAKING_AT_ONCE = 4

NO_STORE = {"Cache-Control": "no-store"}


def poll_view(poll: Poll, now: datetime) -> dict[str, Any]:
    return {
        "id": poll.id,
        "title": poll.title,
        "summary": poll.summary,
        "options": list(poll.options),
        "option_labels": {o: OPTION_LABELS[o] for o in poll.options},
        "opens_at": format_utc(poll.opens_at),
        "closes_at": format_utc(poll.closes_at),
        "timezone": poll.timezone,
        "daily_limit": poll.daily_limit,
        "results": poll.results,
        "lottery": poll.lottery.model_dump() if poll.lottery else None,
        "state": poll.state_at(now).value,
        # Only the texts the catalog translated: {"en": {"title": ...}}, {} when none.
        "translations": poll.translations.model_dump(exclude_none=True),
    }


class Edge:
    """The routes' shared dependencies, built once in main."""

    def __init__(
        self,
        catalog: Catalog,
        tokens: VoterTokens,
        trusted: tuple[Network, ...],
        publish: Publish,
        take_captcha: TakeCaptcha,
        clock: Callable[[], datetime],
        *,
        speak_captcha: SpeakCaptcha,
        publish_timeout: float = 2.0,
    ) -> None:
        self.catalog = catalog
        self.tokens = tokens
        self.trusted = trusted
        self.publish = publish
        self.take_captcha = take_captcha
        self.clock = clock
        self.publish_timeout = publish_timeout
        # Sessions are per device; a generous per-address budget still lets hundreds of
        # phones behind one carrier NAT address start in a minute, but not a script.
        self.session_limit = TokenBuckets(rate_per_second=5.0, burst=300)
        self.captcha_limit = TokenBuckets(rate_per_second=20.0, burst=600)
        self.speak_captcha = speak_captcha
        # A voter may play an answer a few times; a carrier NAT address shares this.
        self.audio_limit = TokenBuckets(rate_per_second=1.0, burst=30)
        self._speaking = 0
        self._submitted: dict[str, Counter] = {}

    def client_ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "0.0.0.0"  # noqa: S104
        return client_address(peer, request.headers.get("x-forwarded-for"), self.trusted)

    def poll(self, request: Request) -> Poll:
        poll_id = request.path_params["poll"]
        poll = self.catalog.get(poll_id)
        if poll is None:
            raise NotFound(f"no poll {poll_id!r}", code="unknown_poll")
        return poll

    async def create_session(self, request: Request) -> Response:
        if not self.session_limit.allow(self.client_ip(request), time.monotonic()):
            raise TooManyRequests("too many new sessions from this address; retry in a minute")
        issued = self.tokens.issue(self.clock())
        body = {
            "voter_token": issued.token,
            "voter_id": issued.voter_id,
            "expires_at": format_utc(issued.expires_at),
        }
        return JsonResponse(body, status_code=201, headers=NO_STORE)

    async def create_captcha(self, request: Request) -> Response:
        if not self.captcha_limit.allow(self.client_ip(request), time.monotonic()):
            raise TooManyRequests("too many captchas from this address; retry in a minute")
        captcha_id, image, expires_at = await self.take_captcha()
        CAPTCHAS_ISSUED.inc()
        body = {"captcha_id": captcha_id, "image": image, "expires_at": format_utc(expires_at)}
        return JsonResponse(body, status_code=201, headers=NO_STORE)

    async def captcha_audio(self, request: Request) -> Response:
        """The answer of a captcha spoken, for voters who cannot read the image."""
        if not self.audio_limit.allow(self.client_ip(request), time.monotonic()):
            raise TooManyRequests("too many audio captchas from this address; retry in a minute")
        if self._speaking >= SPEAKING_AT_ONCE:
            raise ServiceUnavailable(
                "too many audio captchas are being made; retry in a few seconds",
                code="captcha_audio_busy",
            )
        self._speaking += 1
        try:
            verdict, wav = await self.speak_captcha(request.path_params["captcha_id"])
        finally:
            self._speaking -= 1
        if verdict is CaptchaVerdict.EXPIRED:
            raise Gone("this captcha has expired; ask for a new one", code="captcha_expired")
        if verdict is not CaptchaVerdict.OK:
            raise NotFound("no captcha has this id", code="unknown_captcha")
        CAPTCHAS_SPOKEN.inc()
        return Response(wav, media_type="audio/wav", headers=NO_STORE)

    async def list_polls(self, request: Request) -> Response:
        now = self.clock()
        return JsonResponse({"polls": [poll_view(p, now) for p in self.catalog.polls]})

    async def get_poll(self, request: Request) -> Response:
        return JsonResponse(poll_view(self.poll(request), self.clock()))

    async def submit_vote(self, request: Request) -> Response:
        received_at = self.clock()
        poll = self.poll(request)
        voter_id = voter_from_header(self.tokens, request.headers.get("authorization"))
        try:
            require_open(poll, received_at)
            body = parse_vote(await read_json(request), poll)
        except Exception as exc:
            SUBMIT_FAILED.labels(poll.id, getattr(exc, "instance_code", "error")).inc()
            raise
        event = VoteSubmitted(
            vote_id=new_vote_id(),
            poll_id=poll.id,
            choice=body.choice,
            voter_id=voter_id,
            captcha_id=body.captcha_id,
            captcha_answer=body.captcha_answer.strip(),
            received_at=received_at,
            client_ip=self.client_ip(request),
            user_agent=request.headers.get("user-agent", "")[:256],
        )
        await self._publish(event)
        self._submitted_counter(poll.id).inc()
        log.info("vote submitted", extra={"vote_id": event.vote_id, "poll": poll.id})
        status_url = f"/api/v1/votes/{event.vote_id}"
        return JsonResponse(
            {"vote_id": event.vote_id, "status": "pending", "status_url": status_url},
            status_code=202,
            headers={**NO_STORE, "Location": status_url},
        )

    def _submitted_counter(self, poll_id: str) -> Counter:
        # One child per poll of the catalog, kept: looking it up is most of an increment.
        counter = self._submitted.get(poll_id)
        if counter is None:
            counter = self._submitted[poll_id] = VOTES_SUBMITTED.labels(poll_id)
        return counter

    async def _publish(self, event: VoteSubmitted) -> None:
        """Answer 202 only once Kafka has the event; otherwise 503 and nothing stored."""
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.publish(event)
        except (TimeoutError, KafkaError, OSError) as exc:
            SUBMIT_FAILED.labels(event.poll_id, "broker_unavailable").inc()
            log.warning("publish failed: %s", type(exc).__name__, extra={"vote_id": event.vote_id})
            raise ServiceUnavailable(
                "the vote could not be recorded right now; nothing was stored, please retry",
                code="broker_unavailable",
            ) from exc

    async def openapi(self, request: Request) -> Response:
        return JsonResponse(openapi_document())

    def routes(self) -> list[BaseRoute]:
        # Votes are nearly every request, and the router tries routes in order; no other
        # route matches a vote's path, so it goes first.
        return [
            Route("/api/v1/polls/{poll}/votes", self.submit_vote, methods=["POST"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/v1/session", self.create_session, methods=["POST"]),
            Route("/api/v1/captcha", self.create_captcha, methods=["POST"]),
            Route("/api/v1/captcha/{captcha_id}/audio", self.captcha_audio, methods=["GET"]),
            Route("/api/v1/polls", self.list_polls, methods=["GET"]),
            Route("/api/v1/polls/{poll}", self.get_poll, methods=["GET"]),
        ]
