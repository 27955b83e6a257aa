"""The voter's pages as a browser without JavaScript receives them."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image
from starlette.applications import Starlette

from services.vote_ingest import i18n
from services.vote_ingest.pages import STATIC_DIR, TEMPLATES_DIR, page_routes
from shared.assets import asset_versions
from shared.catalog import Catalog, parse_catalog
from shared.lang import LANGS
from shared.netaddr import parse_networks

NOW = datetime(2022, 1, 5, 12, 0, tzinfo=UTC)  # 20:00 in Beijing, mid-campaign

CATALOG_YAML = """
polls:
  - id: open-poll
    title: 文化馆总分馆制建设
    summary: |
      一年来举办联动活动 **300 余场**。

      <script>alert("summary")</script>
      <img src=x onerror="alert(1)">
      [click](javascript:alert(2))
    options: [excellent, good, fair, poor]
    opens_at: 2021-12-20T09:00:00+08:00
    closes_at: 2022-01-08T09:00:00+08:00
    timezone: Asia/Shanghai
    results: live
    lottery: {prizes: 30, prize: 青年文化盲盒, reserves: 10}
    translations:
      en: {title: The culture centre network, prize: youth culture blind box}
  - id: upcoming-poll
    title: 社区图书馆延时开放
    summary: Opens later.
    options: [excellent, good, fair, poor]
    opens_at: 2022-02-01T09:00:00+08:00
    closes_at: 2022-02-20T09:00:00+08:00
    results: after_close
  - id: closed-poll
    title: 街道便民服务中心改造
    summary: Already closed.
    options: [excellent, good, fair, poor]
    opens_at: 2021-11-01T09:00:00+08:00
    closes_at: 2021-12-01T09:00:00+08:00
    results: after_close
    lottery: {prizes: 5, prize: 文创礼包}
  - id: hostile-title
    title: "</script><script>alert('title')</script>"
    summary: x
    options: [excellent, poor]
    opens_at: 2021-12-20T09:00:00+08:00
    closes_at: 2022-01-08T09:00:00+08:00
    daily_limit: 3
    results: after_close
"""

# An XML namespace name identifies SVG; it is never fetched, so it is not a dependency.
NAMESPACES = ("http://www.w3.org/2000/svg",)
EXTERNAL_URL = re.compile(r"https?://", re.IGNORECASE)


@pytest.fixture
def catalog() -> Catalog:
    return parse_catalog(CATALOG_YAML)


@pytest.fixture
async def client(catalog: Catalog) -> AsyncIterator[httpx.AsyncClient]:
    # httpx's ASGI transport rather than starlette.testclient: the latter now warns unless
    # a different HTTP client package is installed, and warnings fail this suite.
    app = Starlette(routes=page_routes(catalog, clock=lambda: NOW))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pages.test") as c:
        yield c


def poll_data(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="poll-data">(.*?)</script>', html, re.S)
    assert match, "the page embeds its data"
    data: dict[str, object] = json.loads(match.group(1))
    return data


async def test_chinese_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/polls/open-poll")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-language"] == "zh-CN"
    assert '<html lang="zh-CN">' in response.text
    for label in ("优", "良", "中", "差", "验证码", "提交投票", "投票中"):
        assert label in response.text
    assert "截止时间：2022年1月8日 09:00（北京时间）" in response.text
    assert "lang" not in response.cookies


async def test_english_with_query_and_remembered_by_cookie(client: httpx.AsyncClient) -> None:
    response = await client.get("/polls/open-poll?lang=en")

    assert '<html lang="en">' in response.text
    for label in ("Excellent", "Good", "Fair", "Poor", "Verification code", "Submit vote"):
        assert label in response.text
    assert "Closes 8 Jan 2022, 09:00 (Beijing time)" in response.text
    assert response.cookies.get("lang") == "en"

    later = await client.get("/")  # the client keeps the cookie, as a browser would
    assert '<html lang="en">' in later.text
    assert 'href="/polls/open-poll?lang=en"' in later.text, "links keep the language"


async def test_switch_link_goes_to_the_other_language(client: httpx.AsyncClient) -> None:
    zh = (await client.get("/polls/open-poll")).text
    en = (await client.get("/polls/open-poll?lang=en")).text

    assert 'href="/polls/open-poll?lang=en"' in zh
    assert 'href="/polls/open-poll?lang=zh"' in en


async def test_unsupported_language_falls_back_to_chinese(client: httpx.AsyncClient) -> None:
    response = await client.get("/polls/open-poll?lang=<fr>")

    assert '<html lang="zh-CN">' in response.text
    assert "<fr>" not in response.text


async def test_poll_text_is_in_the_html_without_javascript(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/open-poll")).text

    assert "<h1" in html and "文化馆总分馆制建设" in html
    assert "<strong>300 余场</strong>" in html, "markdown is rendered on the server"
    assert "<noscript>" in html


async def test_markdown_raw_html_is_escaped(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/open-poll")).text

    assert '<script>alert("summary")' not in html
    assert "&lt;script&gt;alert(&quot;summary&quot;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html


async def test_embedded_data_cannot_close_its_script_tag(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/hostile-title")).text

    assert "<script>alert('title')</script>" not in html
    data = poll_data(html)
    assert data["poll"] == "hostile-title"
    assert data["daily_limit"] == 3


async def test_open_poll_has_an_accessible_form(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/open-poll")).text

    assert 'id="vote-form"' in html
    assert "<fieldset" in html and "<legend>请选择一项评价</legend>" in html
    assert html.count('type="radio" name="choice"') == 4
    assert '<label for="captcha-answer"' in html and 'id="captcha-answer"' in html
    assert 'data-captcha-id=""' in html
    assert 'role="status"' in html and 'aria-live="polite"' in html
    assert 'id="lottery-form"' in html, "the poll has a prize draw"
    assert 'id="countdown"' in html


async def test_embedded_data_lets_the_script_start_without_a_call(
    client: httpx.AsyncClient,
) -> None:
    data = poll_data((await client.get("/polls/open-poll?lang=en")).text)

    assert data["poll"] == "open-poll"
    assert data["state"] == "open"
    assert data["timezone"] == "Asia/Shanghai"
    assert data["closes_at"] == "2022-01-08T01:00:00+00:00"
    assert data["server_now"] == NOW.isoformat()
    assert data["results_visible"] is True
    assert data["lottery"] == {"prizes": 30, "prize": "youth culture blind box"}
    assert data["options"] == [
        {"id": "excellent", "label": "Excellent"},
        {"id": "good", "label": "Good"},
        {"id": "fair", "label": "Fair"},
        {"id": "poor", "label": "Poor"},
    ]
    assert data["strings"] == i18n.js_strings("en")


async def test_upcoming_poll_has_no_form_and_says_when_it_opens(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/upcoming-poll")).text

    assert 'id="vote-form"' not in html
    assert "投票尚未开始" in html
    assert "2022年2月1日 09:00" in html
    assert "投票结果将在投票结束后公布" in html, "after_close results stay hidden"
    assert poll_data(html)["state"] == "upcoming"


async def test_closed_poll_has_no_form_and_shows_results(client: httpx.AsyncClient) -> None:
    html = (await client.get("/polls/closed-poll?lang=en")).text

    assert 'id="vote-form"' not in html
    assert "Voting has closed" in html
    assert 'id="results-bars"' in html, "after_close results are shown once closed"
    assert 'id="countdown"' not in html


@pytest.mark.parametrize(
    ("path", "heading", "rules"),
    [
        ("/polls/open-poll", "参加抽奖", "投票结束后将公开抽取 30 名幸运者"),
        ("/polls/closed-poll", "抽奖", "投票结束后，在报名者中公开抽取 5 名幸运者"),
        ("/polls/closed-poll?lang=en", "Prize draw", "After the close, 5 winners are drawn"),
    ],
)
async def test_the_draw_is_told_as_an_invitation_only_while_entries_are_open(
    client: httpx.AsyncClient, path: str, heading: str, rules: str
) -> None:
    html = (await client.get(path)).text

    assert f'<h2 id="lottery-heading">{heading}</h2>' in html
    assert rules in html
    if "closed" in path:
        assert "Enter once" not in html and "报名一次即可" not in html


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/polls/open-poll/", "/polls/open-poll"),
        ("/polls/OPEN-Poll?lang=en", "/polls/open-poll?lang=en"),
        ("/polls/open-poll//?from=singlemessage", "/polls/open-poll?from=singlemessage"),
        ("/polls/", "/"),
    ],
)
async def test_a_link_passed_around_slightly_wrong_still_lands_on_its_page(
    client: httpx.AsyncClient, path: str, location: str
) -> None:
    response = await client.get(path)

    assert (response.status_code, response.headers["location"]) == (301, location)


@pytest.mark.parametrize("path", ["/polls/nope/", "/polls/open-poll/x", "/polls/open-poll.html"])
async def test_a_page_that_is_not_there_is_still_not_found(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 404


async def test_poll_list_shows_every_poll_with_its_state(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text

    for title, state in (
        ("文化馆总分馆制建设", "投票中"),
        ("社区图书馆延时开放", "未开始"),
        ("街道便民服务中心改造", "已结束"),
    ):
        assert title in html and state in html
    assert html.index("文化馆总分馆制建设") < html.index("街道便民服务中心改造"), "open first"
    assert "&lt;/script&gt;" in html, "titles are escaped"


@pytest.mark.parametrize(
    "path", ["/polls/no-such-poll", "/polls/UPPER", "/polls/a%2Fb", "/polls/open-poll/extra"]
)
async def test_unknown_poll_is_a_404_page(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "找不到这个评议项目" in response.text
    assert 'href="/?lang=zh"' in response.text


async def test_pages_are_not_cached_and_forbid_foreign_content(client: httpx.AsyncClient) -> None:
    response = await client.get("/polls/open-poll")

    assert response.headers["cache-control"] == "no-cache"
    assert "Cookie" in response.headers["vary"]
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy


@pytest.mark.parametrize(
    ("name", "media_type"),
    [("app.js", "javascript"), ("app.css", "text/css"), ("icon.svg", "image/svg+xml")],
)
async def test_static_assets_are_served_and_cached_by_version(
    client: httpx.AsyncClient, name: str, media_type: str
) -> None:
    html = (await client.get("/polls/open-poll")).text
    version = asset_versions(STATIC_DIR)[name]
    assert f"/static/{name}?v={version}" in html

    pinned = await client.get(f"/static/{name}?v={version}")
    assert pinned.status_code == 200
    assert media_type in pinned.headers["content-type"]
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"

    for stale in (f"/static/{name}", f"/static/{name}?v=old"):
        assert (await client.get(stale)).headers["cache-control"] == "no-cache"


async def test_missing_asset_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/static/nope.js")).status_code == 404


def project_files() -> list[Path]:
    return sorted(p for d in (TEMPLATES_DIR, STATIC_DIR) for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", project_files(), ids=lambda p: p.name)
def test_no_external_urls_in_templates_or_assets(path: Path) -> None:
    content = path.read_text(encoding="utf-8")
    for namespace in NAMESPACES:
        content = content.replace(namespace, "")
    assert not EXTERNAL_URL.search(content), f"{path.name} must not load anything from elsewhere"


@pytest.mark.parametrize("path", ["/", "/polls/open-poll", "/polls/closed-poll", "/polls/x"])
async def test_no_external_urls_in_rendered_pages(client: httpx.AsyncClient, path: str) -> None:
    for lang in LANGS:
        assert not EXTERNAL_URL.search((await client.get(f"{path}?lang={lang}")).text)


def test_both_languages_have_the_same_strings() -> None:
    assert set(i18n.STRINGS["zh"]) == set(i18n.STRINGS["en"])
    assert set(i18n.JS_KEYS) <= set(i18n.STRINGS["zh"])
    for key in i18n.STRINGS["zh"]:
        fields = [set(re.findall(r"\{(\w+)\}", i18n.STRINGS[lang][key])) for lang in LANGS]
        assert fields[0] == fields[1], f"{key} uses the same placeholders in both languages"


def test_zone_is_named_as_the_voter_knows_it() -> None:
    assert i18n.zone_name("zh", "Asia/Shanghai") == "北京时间"
    assert i18n.zone_name("en", "Asia/Shanghai") == "Beijing time"
    assert i18n.zone_name("en", "Europe/Berlin") == "Europe/Berlin"


# ---- The poll page's QR code ----


def qr_client(peer: str, base_url: str = "http://vote.example.org") -> httpx.AsyncClient:
    routes = page_routes(
        parse_catalog(CATALOG_YAML), clock=lambda: NOW, trusted=parse_networks("10.0.0.0/8")
    )
    transport = httpx.ASGITransport(app=Starlette(routes=routes), client=(peer, 50000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


def scanned(png: bytes) -> list[str]:
    """What a phone's camera reads from the image."""
    return [code.text for code in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


async def test_qr_code_carries_the_poll_page_address() -> None:
    async with qr_client("10.1.2.3") as c:
        response = await c.get("/polls/open-poll/qr.png", headers={"X-Forwarded-Proto": "https"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert 'filename="open-poll-qr.png"' in response.headers["content-disposition"]
    assert scanned(response.content) == ["https://vote.example.org/polls/open-poll"]


async def test_qr_code_scheme_is_not_taken_from_an_untrusted_peer() -> None:
    async with qr_client("203.0.113.7", "http://192.0.2.10:8080") as c:
        response = await c.get("/polls/open-poll/qr.png", headers={"X-Forwarded-Proto": "https"})

    assert scanned(response.content) == ["http://192.0.2.10:8080/polls/open-poll"]


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/polls/nope/qr.png", {}, 404, "unknown_poll"),
        ("/polls/open-poll/qr.png", {"Host": "evil.example/<x>"}, 400, "invalid_host"),
        ("/polls/open-poll/qr.png", {"Host": ""}, 400, "invalid_host"),
    ],
)
async def test_qr_code_refusals(path: str, headers: dict[str, str], status: int, code: str) -> None:
    async with qr_client("10.1.2.3") as c:
        response = await c.get(path, headers=headers)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_a_shared_link_previews_the_poll_title_and_summary(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/polls/open-poll")).text

    description = re.search(r'<meta name="description" content="([^"]*)">', html)
    assert description, "the page has a description for link previews"
    assert description.group(1).startswith("一年来举办联动活动 300 余场。")
    assert "**" not in description.group(1)
    assert '<meta property="og:title" content="文化馆总分馆制建设">' in html
    index = (await client.get("/")).text
    assert '<meta name="description" content="请为区改革项目的成效作出评价">' in index


async def test_a_preview_is_cut_short_and_escaped(client: httpx.AsyncClient) -> None:
    long_summary = CATALOG_YAML.replace("summary: Opens later.", f"summary: {'长' * 300}")
    app = Starlette(routes=page_routes(parse_catalog(long_summary), clock=lambda: NOW))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://pages.test"
    ) as c:
        upcoming = (await c.get("/polls/upcoming-poll")).text
    hostile = (await client.get("/polls/hostile-title")).text

    assert f'<meta name="description" content="{"长" * 119}…">' in upcoming
    assert "<script>alert('title')" not in hostile
    assert '<meta property="og:title" content="&lt;/script&gt;' in hostile


async def test_the_english_page_shows_the_texts_the_catalog_translated(
    client: httpx.AsyncClient,
) -> None:
    en = (await client.get("/polls/open-poll?lang=en")).text
    zh = (await client.get("/polls/open-poll?lang=zh")).text

    assert '<h1 id="poll-title">The culture centre network</h1>' in en
    assert "<title>The culture centre network · " in en
    assert '<meta property="og:title" content="The culture centre network">' in en
    assert "each receives one “youth culture blind box”" in en
    assert "文化馆总分馆制建设" not in en and "青年文化盲盒" not in en
    assert '<h1 id="poll-title">文化馆总分馆制建设</h1>' in zh
    assert "每人获得一份“青年文化盲盒”" in zh
    assert "The culture centre network" not in zh and "blind box" not in zh


async def test_a_text_left_untranslated_shows_in_chinese_marked_as_chinese(
    client: httpx.AsyncClient,
) -> None:
    en = (await client.get("/polls/open-poll?lang=en")).text
    upcoming = (await client.get("/polls/upcoming-poll?lang=en")).text
    index = (await client.get("/?lang=en")).text
    zh = (await client.get("/polls/upcoming-poll?lang=zh")).text

    # open-poll translates its title but not its summary.
    assert '<div class="summary" lang="zh-CN"><p>一年来举办联动活动' in en
    assert '<h1 id="poll-title" lang="zh-CN">社区图书馆延时开放</h1>' in upcoming
    assert '<h2 lang="zh-CN"><a href="/polls/upcoming-poll?lang=en">社区图书馆延时开放</a>' in index
    assert '<h2><a href="/polls/open-poll?lang=en">The culture centre network</a>' in index
    assert 'lang="zh-CN"' not in zh.split("<body", 1)[1], "a Chinese page marks nothing"


async def test_pages_and_their_assets_go_out_gzipped(client: httpx.AsyncClient) -> None:
    html = await client.get("/polls/open-poll", headers={"accept-encoding": "gzip"})
    script = await client.get("/static/app.js", headers={"accept-encoding": "gzip"})
    plain = await client.get("/polls/open-poll", headers={"accept-encoding": "identity"})

    # httpx has already decoded the bodies; the headers tell how they came.
    assert html.headers["content-encoding"] == "gzip"
    assert html.headers["vary"] == "Cookie, Accept-Encoding"
    assert "<h1" in html.text
    assert script.headers["content-encoding"] == "gzip"
    assert script.content == (STATIC_DIR / "app.js").read_bytes()
    assert "content-encoding" not in plain.headers
    assert plain.text == html.text


async def test_a_page_is_rendered_once_a_second_and_each_language_apart(catalog: Catalog) -> None:
    clock = [NOW]
    app = Starlette(routes=page_routes(catalog, clock=lambda: clock[0]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pages.test") as c:

        async def server_now(path: str) -> object:
            return poll_data((await c.get(path)).text)["server_now"]

        first = await server_now("/polls/open-poll?lang=zh")
        clock[0] = NOW + timedelta(milliseconds=900)
        reused = await server_now("/polls/open-poll?lang=zh")
        english = await c.get("/polls/open-poll?lang=en")
        clock[0] = NOW + timedelta(seconds=1)
        renewed = await server_now("/polls/open-poll?lang=zh")

    assert first == reused == NOW.isoformat(), "one render serves the second"
    assert renewed == (NOW + timedelta(seconds=1)).isoformat()
    in_english = poll_data(english.text)["server_now"]
    assert in_english == (NOW + timedelta(milliseconds=900)).isoformat(), "its own render"
    assert '<html lang="en">' in english.text
    assert english.cookies.get("lang") == "en", "a reused page still remembers the choice"


async def test_a_page_reused_across_the_close_says_closed_within_a_second() -> None:
    closes = datetime(2022, 1, 8, 1, 0, tzinfo=UTC)
    catalog = parse_catalog(CATALOG_YAML)
    clock = [closes - timedelta(milliseconds=500)]
    app = Starlette(routes=page_routes(catalog, clock=lambda: clock[0]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pages.test") as c:
        before = await c.get("/polls/open-poll?lang=en")
        clock[0] = closes + timedelta(milliseconds=400)
        just_after = await c.get("/polls/open-poll?lang=en")
        clock[0] = closes + timedelta(milliseconds=600)
        later = await c.get("/polls/open-poll?lang=en")

    assert poll_data(before.text)["state"] == poll_data(just_after.text)["state"] == "open"
    assert poll_data(later.text)["state"] == "closed"
    assert 'id="vote-form"' not in later.text
