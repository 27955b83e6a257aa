"""The voter's pages: the poll list (`/`) and the voting page (`/polls/{poll}`).

Everything a voter must read (title, summary, state, times) is rendered here, so the page
reads the same before, or without, its script; `static/app.js` adds voting, the countdown,
live results and the prize-draw entry by calling the public API from the same origin.
Every asset is served from `/static`: the pages must work on a closed network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from services.vote_ingest.i18n import js_strings, text, zone_name
from services.vote_ingest.qr import qr_png
from shared.assets import HtmlPage, VersionedStaticFiles, asset_url, asset_versions
from shared.catalog import OPTION_LABELS, Catalog, Poll, PollState, Text
from shared.http import problem
from shared.lang import HTML_LANG, LANG_COOKIE, LANGS, Lang, choose_lang, parse_lang
from shared.netaddr import Network, public_origin

HERE: Final = Path(__file__).parent
STATIC_DIR: Final = HERE / "static"
TEMPLATES_DIR: Final = HERE / "templates"
API_BASE: Final = "/api/v1"
LANG_COOKIE_MAX_AGE: Final = 365 * 24 * 3600

# The pages load nothing from elsewhere; the captcha is a data: URL, results come over SSE
# from the same origin. A strict policy turns a stray injected tag into a no-op.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Vary": "Cookie",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_STATE_ORDER: Final = {PollState.OPEN: 0, PollState.UPCOMING: 1, PollState.CLOSED: 2}
_EN_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)

# A rendered page (and its gzip) is served again for this long: at a busy moment one
# render serves every visitor of that second, where rendering and compressing each one
# cost about twice a vote's CPU. The server time the page embeds for its countdown is
# then up to this much old, less than the network's delay usually adds.
PAGE_REUSE: Final = timedelta(seconds=1)

# Messengers preview a shared link with its page's description and show about this much.
DESCRIPTION_LIMIT: Final = 120

# "js-default" is markdown-it's safe preset: raw HTML is escaped, and link targets such as
# javascript: are refused. The catalog is trusted config, but a poll text must never be
# able to run script in a voter's browser.
_markdown = MarkdownIt("js-default")


def format_time(instant: datetime, poll: Poll, lang: Lang) -> str:
    """A time as the voter reads it, on the poll's clock: 2022年1月8日 09:00 / 8 Jan 2022, 09:00."""
    local = instant.astimezone(poll.zone)
    if lang == "zh":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local.day} {_EN_MONTHS[local.month - 1]} {local.year}, {local:%H:%M}"


def render_summary(summary: str) -> Markup:
    return Markup(_markdown.render(summary))  # noqa: S704 - markdown-it escapes raw HTML


def excerpt(summary_html: Markup, limit: int = DESCRIPTION_LIMIT) -> str:
    """The summary as plain text, cut to `limit` characters: a shared link's preview."""
    plain = summary_html.striptags()
    return plain if len(plain) <= limit else plain[: limit - 1].rstrip() + "…"


def results_visible(poll: Poll, state: PollState) -> bool:
    return poll.results == "live" or state is PollState.CLOSED


def with_lang(path: str, lang: Lang) -> str:
    """A link that keeps the chosen language, even for a voter whose cookies are off."""
    return f"{path}?{urlencode({'lang': lang})}"


@dataclass(frozen=True)
class PollView:
    """What a template needs about one poll, with times already on the poll's clock."""

    poll: Poll
    state: PollState
    href: str
    opens_text: str
    closes_text: str
    zone: str
    title: str
    # The HTML language of the title and the summary when it is not the page's (a text
    # the catalog has not translated), so a screen reader speaks it in its own language.
    title_lang: str | None
    summary_html: Markup
    summary_lang: str | None
    prize: str
    options: list[dict[str, str]]
    results_visible: bool


def _other_lang(text: Text, lang: Lang) -> str | None:
    return None if text.lang == lang else HTML_LANG[text.lang]


def poll_view(poll: Poll, now: datetime, lang: Lang, summary_html: Markup) -> PollView:
    """`summary_html` is the poll's summary in `lang` (or its fallback), rendered."""
    state = poll.state_at(now)
    title = poll.text("title", lang)
    return PollView(
        poll=poll,
        state=state,
        href=with_lang(f"/polls/{poll.id}", lang),
        opens_text=format_time(poll.opens_at, poll, lang),
        closes_text=format_time(poll.closes_at, poll, lang),
        zone=zone_name(lang, poll.timezone),
        title=title.value,
        title_lang=_other_lang(title, lang),
        summary_html=summary_html,
        summary_lang=_other_lang(poll.text("summary", lang), lang),
        prize=poll.text("prize", lang).value,
        options=[{"id": o, "label": OPTION_LABELS[o][lang]} for o in poll.options],
        results_visible=results_visible(poll, state),
    )


def page_data(view: PollView, now: datetime, lang: Lang) -> dict[str, Any]:
    """Embedded in the page as JSON so the script starts without an extra API call."""
    poll = view.poll
    lottery = poll.lottery
    return {
        "poll": poll.id,
        "lang": lang,
        "state": view.state.value,
        "options": view.options,
        "opens_at": poll.opens_at.astimezone(UTC).isoformat(),
        "closes_at": poll.closes_at.astimezone(UTC).isoformat(),
        "timezone": poll.timezone,
        "zone_label": view.zone,
        "daily_limit": poll.daily_limit,
        "results": poll.results,
        "results_visible": view.results_visible,
        "lottery": {"prizes": lottery.prizes, "prize": view.prize} if lottery else None,
        # Phones' clocks are often wrong; the countdown runs on the server's clock.
        "server_now": now.astimezone(UTC).isoformat(),
        "api": API_BASE,
        "strings": js_strings(lang),
    }


@dataclass
class _Rendered:
    """A page as rendered at `at` (the pages' clock)."""

    at: datetime
    page: HtmlPage

    def fresh(self, now: datetime) -> bool:
        return timedelta(0) <= now - self.at < PAGE_REUSE


def page_lang(request: Request) -> tuple[Lang, bool]:
    """The page language, and whether the voter just chose it (so it should be remembered)."""
    asked, cookie = request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)
    lang = choose_lang(asked, cookie)
    return lang, parse_lang(asked) is not None and lang != cookie


class Pages:
    def __init__(
        self,
        catalog: Catalog,
        clock: Callable[[], datetime],
        versions: dict[str, str],
        trusted: tuple[Network, ...],
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.versions = versions
        self.trusted = trusted
        self.summaries = {
            (p.id, lang): render_summary(p.text("summary", lang).value)
            for p in catalog.polls
            for lang in LANGS
        }
        self.descriptions = {key: excerpt(html) for key, html in self.summaries.items()}
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["asset"] = self.asset
        # By path and language: the list and each poll's page, two languages each.
        self._rendered: dict[tuple[str, Lang], _Rendered] = {}

    def asset(self, name: str) -> str:
        return asset_url("/static", self.versions, name)

    def render(
        self,
        request: Request,
        template: str,
        context: Callable[[Lang, datetime], dict[str, Any]],
        status: int = 200,
        *,
        reuse: bool = False,
    ) -> Response:
        """The page in the visitor's language; with `reuse`, one render per path and
        language serves for PAGE_REUSE (the page must depend on nothing else). `context`
        is given the language and the instant the page is rendered at."""
        lang, remember = page_lang(request)
        path = request.url.path
        now = self.clock()
        rendered = self._rendered.get((path, lang)) if reuse else None
        if rendered is None or not rendered.fresh(now):
            body = self._render(template, context(lang, now), lang, path)
            rendered = _Rendered(now, HtmlPage(body.encode()))
            if reuse:
                self._rendered[path, lang] = rendered
        headers = {**PAGE_HEADERS, "Content-Language": HTML_LANG[lang]}
        response = rendered.page.response(request.headers, headers, status)
        if remember:
            response.set_cookie(
                LANG_COOKIE, lang, max_age=LANG_COOKIE_MAX_AGE, samesite="lax", httponly=True
            )
        return response

    def _render(self, template: str, context: dict[str, Any], lang: Lang, path: str) -> str:
        other: Lang = "en" if lang == "zh" else "zh"
        base = {
            "lang": lang,
            "html_lang": HTML_LANG[lang],
            "t": lambda key, **values: text(lang, key, **values),
            "home_href": with_lang("/", lang),
            "switch_href": with_lang(path, other),
            "switch_lang": HTML_LANG[other],
        }
        return self.env.get_template(template).render(**base, **context)

    async def index(self, request: Request) -> Response:
        def context(lang: Lang, now: datetime) -> dict[str, Any]:
            views = [
                poll_view(p, now, lang, self.summaries[p.id, lang]) for p in self.catalog.polls
            ]
            views.sort(key=lambda v: _STATE_ORDER[v.state])
            return {"polls": views}

        return self.render(request, "index.html", context, reuse=True)

    async def poll(self, request: Request) -> Response:
        requested = request.path_params["poll"]
        poll = self.catalog.get(requested)
        if poll is None:
            meant = self.meant(requested)
            if meant is not None:
                query = request.url.query
                return RedirectResponse(f"{meant}?{query}" if query else meant, 301)
            return self.render(request, "not_found.html", lambda lang, now: {}, status=404)

        def context(lang: Lang, now: datetime) -> dict[str, Any]:
            view = poll_view(poll, now, lang, self.summaries[poll.id, lang])
            description = self.descriptions[poll.id, lang]
            return {"view": view, "data": page_data(view, now, lang), "description": description}

        return self.render(request, "poll.html", context, reuse=True)

    def meant(self, requested: str) -> str | None:
        """The page a near miss means: a link passed around with a trailing slash or in
        capitals, or the bare /polls/ (the poll list); None when nothing is meant."""
        tidy = requested.strip("/").lower()
        if not tidy:
            return "/"
        return f"/polls/{tidy}" if self.catalog.get(tidy) is not None else None

    async def qr_code(self, request: Request) -> Response:
        """The QR code of the poll page's address, as this request reached the site."""
        poll_id = request.path_params["poll"]
        if self.catalog.get(poll_id) is None:
            return problem(404, "unknown_poll", "Not found", f"no poll {poll_id!r}")
        origin = public_origin(
            request.client.host if request.client else "",
            request.headers.get("host"),
            request.headers.get("x-forwarded-proto"),
            request.url.scheme,
            self.trusted,
        )
        if origin is None:
            return problem(400, "invalid_host", "Bad request", "the Host header is not valid")
        headers = {
            # The address follows the Host the request came with: never shared across hosts.
            "Cache-Control": "private, no-cache",
            "Content-Disposition": f'inline; filename="{poll_id}-qr.png"',
            "X-Content-Type-Options": "nosniff",
        }
        png = qr_png(f"{origin}/polls/{poll_id}")
        return Response(png, media_type="image/png", headers=headers)


def page_routes(
    catalog: Catalog, *, clock: Callable[[], datetime], trusted: tuple[Network, ...] = ()
) -> list[BaseRoute]:
    """Routes for `/`, `/polls/{poll}` (and its QR code) and `/static`.

    `clock` returns an aware "now"; `trusted` are the proxies whose X-Forwarded-Proto
    tells the scheme the voter used.
    """
    versions = asset_versions(STATIC_DIR)
    pages = Pages(catalog, clock, versions, trusted)
    return [
        Route("/", pages.index, methods=["GET"], name="poll_list"),
        Route("/polls/{poll}/qr.png", pages.qr_code, methods=["GET"], name="poll_qr"),
        # `path` so that any URL under /polls/ gets the voter-facing 404 page, not a bare one.
        Route("/polls/{poll:path}", pages.poll, methods=["GET"], name="poll_page"),
        Mount(
            "/static",
            app=VersionedStaticFiles(directory=STATIC_DIR, versions=versions),
            name="static",
        ),
    ]
