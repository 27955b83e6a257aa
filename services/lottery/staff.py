"""Staff routes: the draw, the prize-delivery export, the erasure of entrants' details
once prizes are delivered, and the console at `/staff/`.

Every call with a valid staff token is written to the staff audit table (who, what, when,
which poll, how it ended) and logged as one JSON line; a call with a missing or wrong
token is logged, without the token. No name or phone number is ever logged; only the
CSV export carries them, to staff.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from services.lottery import store
from services.lottery.bodies import parse_draw, parse_erase
from services.lottery.console_text import STRINGS
from services.lottery.handlers import Lottery, WinnerRow
from services.lottery.http import BASE, NO_STORE
from shared.assets import HtmlPage, VersionedStaticFiles, asset_url, asset_versions
from shared.auth import StaffTokens
from shared.errors import ApiError
from shared.events import format_utc
from shared.http import JsonResponse, read_json
from shared.lang import HTML_LANG, LANG_COOKIE, Lang, choose_lang

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
STATIC: Final = HERE / "static"
CSV_COLUMNS: Final = ("rank", "role", "entry_id", "name", "phone")

# The console loads nothing from elsewhere and keeps the staff token in sessionStorage:
# a strict policy means no injected script could run beside it to read the token.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# A cell starting with one of these is a formula to a spreadsheet; names are free text.
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")

Action = Callable[[str], Awaitable[tuple[Response, str]]]


def csv_cell(value: object) -> str:
    """A value safe to open in a spreadsheet: a leading formula character is quoted away."""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def winners_csv(rows: Iterable[WinnerRow]) -> str:
    """UTF-8 with a byte-order mark, so spreadsheet programs show Chinese names correctly."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [csv_cell(v) for v in (row.rank, row.role, row.entry_id, row.name, row.phone)]
        )
    return "\ufeff" + out.getvalue()


class StaffDesk:
    """Authenticates, runs and audits each staff call."""

    def __init__(self, lottery: Lottery, staff: StaffTokens) -> None:
        self.lottery = lottery
        self.staff = staff
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
        )
        self._console = env.get_template("staff.html")
        self._pages: dict[Lang, HtmlPage] = {}
        self._versions = asset_versions(STATIC)
        env.globals["asset"] = functools.partial(asset_url, "/staff/static", self._versions)

    async def audited(self, request: Request, action: str, run: Action) -> Response:
        """Staff first: a caller without a valid token learns nothing, not even a 404."""
        # Only catalog ids reach logs and the audit table: the path is whatever was sent.
        sent = request.path_params.get("poll")
        poll_id = sent if sent is None or self.lottery.catalog.get(sent) else "(unknown poll)"
        try:
            who = self.staff.require(request.headers.get("authorization"))
        except ApiError as exc:
            log.warning(
                "staff call refused",
                extra={"action": action, "poll": poll_id, "outcome": exc.instance_code},
            )
            raise
        try:
            response, outcome = await run(who)
        except ApiError as exc:
            await self._note(who, action, poll_id, exc.instance_code)
            raise
        except Exception:
            await self._note(who, action, poll_id, "internal_error")
            raise
        await self._note(who, action, poll_id, outcome)
        return response

    async def _note(self, who: str, action: str, poll_id: str | None, outcome: str) -> None:
        log.info(
            "staff call",
            extra={"staff": who, "action": action, "poll": poll_id, "outcome": outcome},
        )
        await store.note_staff_call(self.lottery.pool, who, action, poll_id, outcome)

    async def draw(self, request: Request) -> Response:
        async def run(who: str) -> tuple[Response, str]:
            poll = self.lottery.poll(request.path_params["poll"])
            body = await request.body()
            entropy = parse_draw(await read_json(request) if body.strip() else None)
            drawn = await self.lottery.draw(poll, who, entropy)
            response = Response(
                drawn.draw.record,
                status_code=201 if drawn.created else 200,
                media_type="application/json",
                headers=NO_STORE,
            )
            return response, "drawn" if drawn.created else "already_drawn"

        return await self.audited(request, "draw", run)

    async def export(self, request: Request) -> Response:
        async def run(who: str) -> tuple[Response, str]:
            poll = self.lottery.poll(request.path_params["poll"])
            rows = await self.lottery.winner_rows(poll)
            filename = f"{poll.id}-winners.csv"
            response = Response(
                winners_csv(rows),
                media_type="text/csv; charset=utf-8",
                headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{filename}"'},
            )
            return response, f"exported {len(rows)} rows"

        return await self.audited(request, "winners_csv", run)

    async def erase(self, request: Request) -> Response:
        async def run(who: str) -> tuple[Response, str]:
            poll = self.lottery.poll(request.path_params["poll"])
            parse_erase(await read_json(request), poll.id)
            erased = await self.lottery.erase_details(poll, who)
            body = {
                "poll_id": poll.id,
                "details_erased_at": format_utc(erased.at),
                "details_erased_by": erased.by,
                "entries": erased.entries,
            }
            outcome = f"erased {erased.entries} entries" if erased.created else "already_erased"
            return JsonResponse(body, headers=NO_STORE), outcome

        return await self.audited(request, "erase_details", run)

    async def overview(self, request: Request) -> Response:
        async def run(who: str) -> tuple[Response, str]:
            polls = await self.lottery.staff_overview()
            return JsonResponse({"staff": who, "polls": polls}, headers=NO_STORE), "ok"

        return await self.audited(request, "console", run)

    async def console(self, request: Request) -> Response:
        # The page itself holds no data: everything comes from the audited JSON call.
        lang = choose_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
        page = self._pages.get(lang)
        if page is None:  # the same for every request in a language: rendered once
            strings = STRINGS[lang]
            html = self._console.render(
                html_lang=HTML_LANG[lang], t=strings.__getitem__, strings=strings
            )
            page = self._pages[lang] = HtmlPage(html.encode())
        return page.response(request.headers, PAGE_HEADERS)

    def routes(self) -> list[BaseRoute]:
        async def to_console(request: Request) -> Response:
            return RedirectResponse("/staff/", status_code=301)

        return [
            Route(BASE + "/draw", self.draw, methods=["POST"]),
            Route(BASE + "/winners.csv", self.export, methods=["GET"]),
            Route("/staff", to_console, methods=["GET"]),
            Route("/staff/", self.console, methods=["GET"]),
            Route("/staff/api/polls", self.overview, methods=["GET"]),
            Route("/staff/api/polls/{poll}/erase", self.erase, methods=["POST"]),
            Mount(
                "/staff/static",
                VersionedStaticFiles(directory=STATIC, versions=self._versions),
                name="staff-static",
            ),
        ]
