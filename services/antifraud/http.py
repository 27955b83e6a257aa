"""Decision lookup: GET /api/v1/votes/{vote_id} answers pending until the vote is decided.

Only an id the ingest could have issued reads as pending: it mints every vote id as a
canonical UUIDv7 (:func:`shared.events.new_vote_id`) carrying the millisecond it was made.
Any other id that has no decision, including one made "later" than the clock allows,
never belonged to a vote and gets 404 instead of a pending that would never end. Other
spellings of a UUID (upper case, braces, no hyphens) are read as its canonical form.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from services.antifraud import store
from shared.catalog import Catalog
from shared.errors import NotFound
from shared.events import RejectReason, format_utc
from shared.http import JsonResponse

# How far ahead of this service's clock an id's time may be: the ingest replicas' clocks
# may run a little ahead of this one.
CLOCK_SKEW = timedelta(minutes=5)


def could_be_issued(vote_id: str, now: datetime) -> bool:
    """Whether the ingest could have issued ``vote_id`` by ``now`` (see the module's text)."""
    try:
        parsed = uuid.UUID(vote_id)
    except ValueError:
        return False
    if str(parsed) != vote_id or parsed.variant != uuid.RFC_4122 or parsed.version != 7:
        return False
    made_ms = parsed.int >> 80
    return made_ms <= (now + CLOCK_SKEW).timestamp() * 1000


def status_document(
    vote_id: str, found: store.StoredDecision | None, catalog: Catalog
) -> dict[str, Any]:
    if found is None:
        return {
            "vote_id": vote_id,
            "poll_id": None,
            "status": "pending",
            "reason": None,
            "day": None,
        }
    doc: dict[str, Any] = {
        "vote_id": vote_id,
        "poll_id": found.poll_id,
        "status": found.verdict,
        "reason": found.reason,
        "day": found.day.isoformat() if found.day else None,
    }
    poll = catalog.get(found.poll_id)
    if found.reason == RejectReason.DAILY_LIMIT and poll is not None:
        doc["day"] = poll.day_of(found.received_at).isoformat()
        # On the poll's last day there is no next day to vote on: no time to come back.
        next_day = poll.next_day_starts(found.received_at)
        if next_day < poll.closes_at:
            doc["next_vote_at"] = format_utc(next_day)
    return doc


def routes(
    catalog: Catalog, pool: dict[str, asyncpg.Pool], clock: Callable[[], datetime]
) -> list[BaseRoute]:
    async def vote_status(request: Request) -> Response:
        try:
            # Ids are issued and stored in canonical form; read any other spelling as it.
            vote_id = str(uuid.UUID(request.path_params["vote_id"]))
        except ValueError as exc:
            raise NotFound("no vote has this id", code="unknown_vote") from exc
        found = await store.find_decision(pool["pool"], vote_id)
        if found is None and not could_be_issued(vote_id, clock()):
            raise NotFound("no vote has this id", code="unknown_vote")
        headers = {"Cache-Control": "no-store"}
        return JsonResponse(status_document(vote_id, found, catalog), headers=headers)

    return [Route("/api/v1/votes/{vote_id}", vote_status, methods=["GET"])]
