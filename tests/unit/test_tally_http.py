"""Who may read a poll's results (contract section 4): everyone for a `live` poll; for an
`after_close` one, staff until the close and everyone after it. The same rule holds for
the document, its live stream and both exports."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Scope

from services.tally.http import routes
from services.tally.hub import ResultsHub
from shared.auth import StaffTokens
from shared.catalog import parse_catalog
from shared.http import Health, build_app

CLOSES = datetime(2022, 1, 8, 1, 0, tzinfo=UTC)
BEFORE, AFTER = CLOSES - timedelta(hours=1), CLOSES + timedelta(hours=1)
STAFF_TOKEN = "staff-token-of-the-tally-test"
CATALOG = f"""
polls:
  - id: hidden
    title: After the close
    options: [excellent, good]
    opens_at: {(CLOSES - timedelta(days=3)).isoformat()}
    closes_at: {CLOSES.isoformat()}
    results: after_close
  - id: open-book
    title: Live
    options: [excellent, good]
    opens_at: {(CLOSES - timedelta(days=3)).isoformat()}
    closes_at: {CLOSES.isoformat()}
    results: live
"""
PATHS = ("", ".csv", ".json", "/stream")


async def counts() -> dict[str, dict[str, int]]:
    return {"hidden": {"excellent": 3, "good": 1}, "open-book": {"good": 2}}


async def drained(closed_at: datetime) -> bool:
    return True


async def results_app(now: datetime) -> Starlette:
    catalog = parse_catalog(CATALOG)
    hub = ResultsHub(catalog, counts, drained, lambda: now)
    await hub.refresh()
    staff = StaffTokens("ops=" + hashlib.sha256(STAFF_TOKEN.encode()).hexdigest())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    return build_app(
        "tally", "test", routes(catalog, hub, staff, lambda: now), Health("tally", []), lifespan
    )


async def status(app: Starlette, path: str, headers: dict[str, str]) -> int:
    """The answer's status, read from its head: a stream never ends by itself."""
    head: list[int] = []
    started = asyncio.Event()

    async def receive() -> Message:
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            head.append(message["status"])
            started.set()

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("203.0.113.7", 50000),
        "server": ("tally.test", 80),
    }
    answering = asyncio.create_task(app(scope, receive, send))
    async with asyncio.timeout(5):
        await started.wait()
    answering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await answering
    return head[0]


@pytest.mark.parametrize("path", PATHS)
async def test_an_after_close_poll_is_hidden_from_the_public_until_the_close(path: str) -> None:
    app = await results_app(BEFORE)
    url = f"/api/v1/polls/hidden/results{path}"
    statuses = [
        await status(app, url, {}),
        await status(app, url, {"Authorization": "Bearer not-a-staff-token"}),
        await status(app, url, {"Authorization": f"Bearer {STAFF_TOKEN}"}),
    ]
    assert statuses == [403, 403, 200]


@pytest.mark.parametrize("path", PATHS)
async def test_results_are_public_after_the_close_and_for_a_live_poll(path: str) -> None:
    after = await status(await results_app(AFTER), f"/api/v1/polls/hidden/results{path}", {})
    live = await status(await results_app(BEFORE), f"/api/v1/polls/open-book/results{path}", {})
    assert (after, live) == (200, 200)


async def test_the_public_is_told_why_and_staff_read_the_hidden_count() -> None:
    transport = httpx.ASGITransport(app=await results_app(BEFORE))
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as client:
        public = await client.get("/api/v1/polls/hidden/results")
        staff = await client.get(
            "/api/v1/polls/hidden/results", headers={"Authorization": f"Bearer {STAFF_TOKEN}"}
        )
    assert (public.status_code, public.json()["code"]) == (403, "results_hidden")
    assert (staff.json()["counts"], staff.json()["total"]) == ({"excellent": 3, "good": 1}, 4)


async def test_past_its_viewer_bound_a_server_refuses_a_stream_until_one_leaves() -> None:
    catalog = parse_catalog(CATALOG)
    hub = ResultsHub(catalog, counts, drained, lambda: BEFORE, max_viewers=1)
    await hub.refresh()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    app = build_app(
        "tally",
        "test",
        routes(catalog, hub, StaffTokens(""), lambda: BEFORE),
        Health("tally", []),
        lifespan,
    )
    url = "/api/v1/polls/open-book/results/stream"
    watching = hub.stream("open-book")
    await anext(watching)  # one viewer holds a stream

    refused = await status(app, url, {})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://tally.test") as c:
        document = await c.get("/api/v1/polls/open-book/results")
        async with asyncio.timeout(5):  # a stream admitted would never end
            problem = await c.get(url)
    await watching.aclose()  # that viewer leaves
    admitted = await status(app, url, {})

    assert (refused, admitted) == (503, 200)
    assert problem.json()["code"] == "results_stream_full"
    assert document.status_code == 200, "the document is still read, every few seconds"
