"""GET /api/v1/votes/{vote_id}: a decided vote reads its decision, a vote the ingest issued
reads pending until it is decided, and an id no vote was ever issued reads 404."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from services.antifraud.http import CLOCK_SKEW, could_be_issued, routes
from shared.catalog import parse_catalog
from shared.events import new_vote_id
from shared.http import Health, build_app

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CATALOG = """
polls:
  - id: demo
    title: Demo
    options: [excellent, good]
    opens_at: 2026-11-20T09:00:00+08:00
    closes_at: 2026-12-20T09:00:00+08:00
"""
V4 = "5f0c6a4e-2b1d-4c8e-9a7f-3d2e1c0b9a88"
V1 = "c232ab00-9414-11ec-b3c8-9f6bdeced846"


def v7_at(moment: datetime) -> str:
    """A canonical UUIDv7 carrying ``moment``'s millisecond, as the ingest makes them."""
    millis = int(moment.timestamp() * 1000)
    value = (millis << 80) | 0x3D2E_1C0B_9A88_5F0C_6A4E
    value = (value & ~(0xF << 76)) | (7 << 76)  # version 7
    value = (value & ~(0b11 << 62)) | (0b10 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


class Decisions:
    """Stands in for the pool: the decisions table as a dict."""

    def __init__(self, rows: dict[str, dict[str, Any]]) -> None:
        self.rows = rows

    async def fetchrow(self, query: str, vote_id: str) -> dict[str, Any] | None:
        return self.rows.get(vote_id)


def lookup_app(rows: dict[str, dict[str, Any]]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    pools: dict[str, Any] = {"pool": Decisions(rows)}
    return build_app(
        "antifraud",
        "test",
        routes(parse_catalog(CATALOG), pools, lambda: NOW),
        Health("antifraud", []),
        lifespan,
    )


async def get(app: Starlette, vote_id: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://antifraud.test") as c:
        return await c.get(f"/api/v1/votes/{vote_id}")


def test_an_id_the_ingest_mints_now_could_be_issued() -> None:
    assert could_be_issued(new_vote_id(), datetime.now(UTC))


@pytest.mark.parametrize(
    ("vote_id", "why"),
    [
        (V4, "version 4"),
        (V1, "version 1"),
        (v7_at(NOW).upper(), "not canonical"),
        ("{" + v7_at(NOW) + "}", "not canonical"),
        (v7_at(NOW).replace("-", ""), "not canonical"),
        (v7_at(NOW + CLOCK_SKEW + timedelta(seconds=1)), "made after now"),
        (str(uuid.UUID(int=0)), "nil"),
    ],
)
def test_an_id_the_ingest_never_mints_could_not_be_issued(vote_id: str, why: str) -> None:
    assert not could_be_issued(vote_id, NOW), why


def test_ids_from_the_past_and_from_a_clock_a_little_ahead_could_be_issued() -> None:
    assert could_be_issued(v7_at(NOW - timedelta(days=30)), NOW)
    assert could_be_issued(v7_at(NOW), NOW)
    assert could_be_issued(v7_at(NOW + CLOCK_SKEW - timedelta(seconds=1)), NOW)


async def test_an_issued_vote_reads_pending_until_it_is_decided() -> None:
    vote_id = v7_at(NOW - timedelta(seconds=1))
    response = await get(lookup_app({}), vote_id)
    assert response.status_code == 200
    assert response.json() == {
        "vote_id": vote_id,
        "poll_id": None,
        "status": "pending",
        "reason": None,
        "day": None,
    }
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "vote_id",
    [V4, "{" + V4 + "}", v7_at(NOW + timedelta(days=1)), "not-a-vote-id"],
)
async def test_an_id_no_vote_was_issued_reads_404_unknown_vote(vote_id: str) -> None:
    response = await get(lookup_app({}), vote_id)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unknown_vote"


async def test_a_decided_vote_reads_its_decision_whatever_its_id() -> None:
    row = {
        "poll_id": "demo",
        "verdict": "accepted",
        "reason": None,
        "day": date(2026, 11, 27),
        "received_at": NOW - timedelta(seconds=2),
    }
    response = await get(lookup_app({V4: row}), V4)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["poll_id"], body["day"]) == ("accepted", "demo", "2026-11-27")


@pytest.mark.parametrize(
    "spelling", [str.upper, lambda i: "{" + i + "}", lambda i: i.replace("-", "")]
)
async def test_another_spelling_of_an_id_reads_as_the_issued_id(
    spelling: Callable[[str], str],
) -> None:
    pending = v7_at(NOW - timedelta(seconds=1))
    response = await get(lookup_app({}), spelling(pending))
    assert (response.status_code, response.json()["vote_id"]) == (200, pending)
    assert response.json()["status"] == "pending"

    decided = v7_at(NOW - timedelta(seconds=5))
    row = {
        "poll_id": "demo",
        "verdict": "rejected",
        "reason": "captcha_wrong",
        "day": None,
        "received_at": NOW - timedelta(seconds=5),
    }
    response = await get(lookup_app({decided: row}), spelling(decided))
    body = response.json()
    assert (body["vote_id"], body["status"], body["reason"]) == (
        decided,
        "rejected",
        "captcha_wrong",
    )


def daily_limit_row(received_at: datetime) -> dict[str, Any]:
    return {
        "poll_id": "demo",
        "verdict": "rejected",
        "reason": "daily_limit",
        "day": None,
        "received_at": received_at,
    }


async def test_a_vote_over_the_daily_limit_says_when_the_next_day_starts() -> None:
    # 2026-11-27 17:00 Asia/Shanghai; the next day starts at 16:00 UTC.
    received = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    body = (await get(lookup_app({V4: daily_limit_row(received)}), V4)).json()
    assert body["day"] == "2026-11-27"
    assert body["next_vote_at"] == "2026-11-27T16:00:00.000000Z"


async def test_on_the_last_day_a_vote_over_the_limit_gets_no_time_to_come_back() -> None:
    # The poll closes 2026-12-20 09:00 Asia/Shanghai, before the next day starts.
    received = datetime(2026, 12, 19, 23, 0, tzinfo=UTC)  # 2026-12-20 07:00 in Shanghai
    body = (await get(lookup_app({V4: daily_limit_row(received)}), V4)).json()
    assert body["day"] == "2026-12-20"
    assert "next_vote_at" not in body
