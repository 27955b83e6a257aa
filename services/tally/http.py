"""Tally's routes: results, the live results stream and the open-data export."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from services.tally.hub import ResultsHub
from services.tally.rules import results_visible
from shared.auth import StaffTokens
from shared.catalog import Catalog, Poll
from shared.errors import Forbidden, NotFound, ServiceUnavailable
from shared.http import JsonResponse


def routes(
    catalog: Catalog, hub: ResultsHub, staff: StaffTokens, clock: Callable[[], datetime]
) -> list[BaseRoute]:
    def visible_poll(request: Request) -> Poll:
        poll_id = request.path_params["poll"]
        poll = catalog.get(poll_id)
        if poll is None:
            raise NotFound(f"no poll {poll_id!r}", code="unknown_poll")
        is_staff = staff.identify(request.headers.get("authorization")) is not None
        if not results_visible(poll, clock(), staff=is_staff):
            raise Forbidden("results are published after the close", code="results_hidden")
        return poll

    def current(poll: Poll) -> dict[str, object]:
        doc = hub.document(poll.id)
        if doc is None:
            raise ServiceUnavailable("results are not available yet", code="results_unavailable")
        return doc

    async def results(request: Request) -> Response:
        doc = current(visible_poll(request))
        return JsonResponse(doc, headers={"Cache-Control": "no-cache"})

    async def stream(request: Request) -> Response:
        poll = visible_poll(request)
        if not hub.has_room():
            # The page falls back to reading GET .../results every 15 s, which costs
            # this service one read of a document it holds in memory.
            raise ServiceUnavailable(
                "too many live viewers on this server; read the results every few seconds",
                code="results_stream_full",
            )
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            hub.stream(poll.id), media_type="text/event-stream", headers=headers
        )

    async def export_csv(request: Request) -> Response:
        poll = visible_poll(request)
        doc = current(poll)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["poll_id", "option", "votes", "as_of", "final"])
        counts = doc["counts"]
        for option, n in counts.items() if isinstance(counts, dict) else ():
            writer.writerow([poll.id, option, n, doc["as_of"], doc["final"]])
        filename = f"{poll.id}-results.csv"
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def export_json(request: Request) -> Response:
        doc = current(visible_poll(request))
        filename = f"{doc['poll_id']}-results.json"
        return JsonResponse(
            doc, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    base = "/api/v1/polls/{poll}/results"
    return [
        Route(base, results, methods=["GET"]),
        Route(base + "/stream", stream, methods=["GET"]),
        Route(base + ".csv", export_csv, methods=["GET"]),
        Route(base + ".json", export_json, methods=["GET"]),
    ]
