"""Staff open the prize-draw console in a browser, sign in, and read each poll's draw.

The browser's own zone is New York: the console must show the poll's clock (the close
is "09:00" in Beijing), named, not the browser's. The console is Chinese unless English is
asked for; most tests use the English one.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Browser, Locator, Page, Route, expect

from scripts.stack.settings import DEMO_POLL
from shared.catalog import load_catalog
from shared.events import format_utc
from tests.support.a11y import assert_accessible
from tests.support.http import vote_as_a_new_voter

pytestmark = pytest.mark.e2e


@pytest.fixture
async def console(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1100, "height": 900}, timezone_id="America/New_York"
    )
    yield await context.new_page()
    await context.close()


async def sign_in(page: Page, gateway_url: str, staff_token: str) -> None:
    """Sign in to the English console."""
    await page.goto(f"{gateway_url}/staff/?lang=en")
    await page.get_by_label("Staff token").fill(staff_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def amend_listing(
    page: Page, poll_id: str, changes: dict[str, Any], *, first_only: bool = False
) -> list[int]:
    """Serve the console the service's poll listing with `changes` made to one poll (to
    the first listing only, if asked). The returned list counts the listings served."""
    served: list[int] = []

    async def amended(route: Route) -> None:
        served.append(1)
        response = await route.fetch()
        data = await response.json()
        if not first_only or len(served) == 1:
            for poll in data["polls"]:
                if poll["poll_id"] == poll_id:
                    poll.update(changes)
        await route.fulfill(response=response, body=json.dumps(data))

    await page.route(re.compile(r".*/staff/api/polls$"), amended)
    return served


def card(page: Page, poll_id: str) -> Locator:
    return page.locator("section.poll").filter(has=page.locator(f"code:text-is('{poll_id}')"))


async def test_signed_in_staff_see_each_draw_on_the_poll_s_clock(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await expect(closed).to_contain_text("20 Dec 2021, 09:00 → 8 Jan 2022, 09:00 (Asia/Shanghai)")
    await expect(closed.locator("code.hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))


async def test_a_draw_without_entries_says_so_and_when_and_by_whom_it_was_made(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The stack's own draw is made once for good, so this draw is served to the page.
    drawn = {"state": "drawn", "drawn_at": "2022-01-08T02:00:00.000000Z", "drawn_by": "alice"}
    await amend_listing(console, closed_poll, {**drawn, "winners": [], "reserve_list": []})
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await expect(closed.locator("dd[data-part='drawn']")).to_have_text(
        "8 Jan 2022, 10:00, by alice"
    )
    winners = closed.locator("tbody[data-field='winners'] td")
    await expect(winners).to_have_text(["None: the draw had no eligible entries."])
    reserves = closed.locator("tbody[data-field='reserve_list'] td")
    await expect(reserves).to_have_text(["None: no eligible entry was left over."])


async def test_a_console_left_open_over_the_close_brings_up_the_draw_by_itself(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The first listing has the closed poll still open, closing in a minute; later ones
    # are the service's own. The page's clock is moved past the close, nothing clicked.
    closes_at = format_utc(datetime.now(UTC) + timedelta(minutes=1))
    still_open = {"state": "open", "closes_at": closes_at, "drawn_at": None}
    await console.clock.install()
    listings = await amend_listing(console, closed_poll, still_open, first_only=True)
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    before_close = closed.locator("[data-part='before-close']")
    await expect(before_close).to_be_visible()

    await console.clock.fast_forward(70_000)
    await expect(before_close).to_be_hidden()
    await expect(closed.locator(".state")).not_to_have_text("open")
    assert len(listings) == 2


async def test_the_console_is_chinese_by_default_and_switches_to_english_signed_in(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str, polls_file: Path
) -> None:
    poll = load_catalog(polls_file).get(closed_poll)
    assert poll is not None and poll.lottery is not None
    zh_title, en_title = poll.title, poll.text("title", "en").value
    assert en_title != zh_title, "the demo catalog gives the campaign an English title"
    await console.goto(f"{gateway_url}/staff/")
    await expect(console.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(console.get_by_label("工作人员令牌")).to_be_visible()
    await assert_accessible(console, "the staff console's sign-in")
    await console.get_by_label("工作人员令牌").fill(staff_token)
    await console.get_by_role("button", name="登录").click()
    await expect(console.get_by_role("button", name="退出登录")).to_be_visible()
    closed = card(console, closed_poll)
    await expect(closed).to_contain_text(
        "2021年12月20日 09:00 → 2022年1月8日 09:00 (Asia/Shanghai)"
    )
    await expect(closed.locator(".state")).to_have_text(re.compile("^(待抽奖|已开奖)$"))
    await expect(closed).to_contain_text("30 份 青年文化盲盒，另设候补 10 名")
    await expect(closed.locator('[data-field="title"]')).to_have_text(zh_title)

    # The token lives in the tab: switching language keeps the console signed in.
    await console.get_by_role("link", name="English").click()
    await expect(console.locator("html")).to_have_attribute("lang", "en")
    await expect(console.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(closed.locator(".state")).to_have_text(re.compile("^(awaiting draw|drawn)$"))
    # The catalog's English texts where it has them.
    prize = poll.text("prize", "en").value
    await expect(closed).to_contain_text(f"30 × {prize}, 10 reserves")  # noqa: RUF001
    await expect(closed.locator('[data-field="title"]')).to_have_text(en_title)
    await expect(closed.locator('[data-field="title"]')).not_to_have_attribute("lang", "zh-CN")


async def test_a_refused_draw_is_explained_in_the_console_s_language(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The stack's draw may already be made; the console is shown the poll awaiting its
    # draw, and the service's refusal while votes are still in the pipeline.
    async def not_drained(route: Route) -> None:
        problem = {
            "type": "about:blank",
            "title": "Conflict",
            "status": 409,
            "detail": "votes received before the close are still being decided; retry shortly",
            "code": "pipeline_not_drained",
            "left": {"antifraud/votes.submitted": 3, "lottery/votes.accepted": 0},
        }
        await route.fulfill(
            status=409, content_type="application/problem+json", body=json.dumps(problem)
        )

    await amend_listing(console, closed_poll, {"state": "awaiting_draw", "drawn_at": None})
    await console.route(re.compile(r".*/lottery/draw$"), not_drained)
    await console.goto(f"{gateway_url}/staff/")
    await console.get_by_label("工作人员令牌").fill(staff_token)
    await console.get_by_role("button", name="登录").click()
    closed = card(console, closed_poll)
    await closed.get_by_label("评议项目编号", exact=True).fill(closed_poll)
    await closed.get_by_role("button", name="开始抽奖").click()
    await expect(closed.get_by_role("alert")).to_have_text(
        "截止前收到的选票仍在处理中，请稍后重试。 （尚待处理：antifraud/votes.submitted 3）"
        " (pipeline_not_drained)"
    )
    await expect(closed.get_by_role("button", name="开始抽奖")).to_be_enabled()


async def test_staff_follow_the_count_live_and_see_which_counts_are_not_yet_public(
    console: Page, gateway_url: str, staff_token: str, captcha_secret: str
) -> None:
    # The demo poll publishes its count live; the listing is shown it with the other
    # policy as well, for the note that only staff see the count before the close.
    await amend_listing(console, DEMO_POLL, {"results": "after_close"})
    await sign_in(console, gateway_url, staff_token)
    demo = card(console, DEMO_POLL)
    await expect(demo.locator("tbody[data-field='count'] td:first-child")).to_have_text(
        ["Excellent", "Good", "Fair", "Poor"]
    )
    status = demo.locator("[data-field='count_status']")
    await expect(status).to_have_text(re.compile(r"^[\d,]+ votes? in total · Live, as of "))
    await expect(demo.locator("[data-part='count-private']")).to_be_visible()
    before = int(re.sub(r"\D", "", (await status.inner_text()).split("·")[0]))

    # A vote counted while the console stays open shows without a click.
    await asyncio.to_thread(vote_as_a_new_voter, gateway_url, DEMO_POLL, captcha_secret, "fair")
    await console.wait_for_function(
        """([node, n]) => Number(node.textContent.split("·")[0].replace(/\\D/g, "")) > n""",
        arg=[await status.element_handle(), before],
        timeout=20_000,
    )


@pytest.mark.parametrize(
    ("lang", "expected"), [("en", "1 vote in total · Final"), ("zh", "共 1 票 · 最终结果")]
)
async def test_a_count_of_one_reads_in_the_language_s_singular(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str, lang: str, expected: str
) -> None:
    one = {"poll_id": closed_poll, "counts": {"good": 1}, "total": 1, "final": True}
    one["as_of"] = "2022-01-08T01:00:00.000000Z"

    async def served(route: Route) -> None:
        await route.fulfill(content_type="application/json", body=json.dumps(one))

    await console.route(re.compile(rf".*/polls/{closed_poll}/results$"), served)
    await console.goto(f"{gateway_url}/staff/?lang={lang}")
    await console.locator("#token").fill(staff_token)
    await console.locator("#sign-in-form button").click()
    status = card(console, closed_poll).locator("[data-field='count_status']")
    await expect(status).to_have_text(expected)


async def test_staff_take_the_voting_page_s_address_and_qr_code_for_the_article(
    console: Page, gateway_url: str, staff_token: str
) -> None:
    await sign_in(console, gateway_url, staff_token)
    demo = card(console, DEMO_POLL)
    address = f"{gateway_url}/polls/{DEMO_POLL}"
    await expect(demo.get_by_role("link", name=address)).to_have_attribute(
        "href", f"/polls/{DEMO_POLL}"
    )

    await demo.get_by_text("QR code (for articles and posters)").click()
    image = demo.get_by_role("img", name="QR code of the voting page of")
    await expect(image).to_be_visible()
    await assert_accessible(console, "the staff console, signed in, a QR code shown")
    assert await image.evaluate("(img) => img.complete && img.naturalWidth > 0")
    async with console.expect_download() as started:
        await demo.get_by_role("link", name="Download the QR code (PNG)").click()
    download = await started.value
    assert download.suggested_filename == f"{DEMO_POLL}-qr.png"
    png = await asyncio.to_thread(Path(await download.path()).read_bytes)
    assert [c.text for c in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))] == [address]


async def test_after_delivery_staff_erase_entrants_details_and_the_export_goes(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The service's side is tested against the real database (test_lottery_service); here
    # the console is shown a drawn poll and the erasure is answered as the service does.
    changes: dict[str, Any] = {
        "state": "drawn",
        "drawn_at": "2022-01-08T02:00:00.000000Z",
        "drawn_by": "tester",
        "details_erased_at": None,
        "details_erased_by": None,
    }
    sent: list[Any] = []

    async def erase(route: Route) -> None:
        sent.append(route.request.post_data_json)
        changes.update(details_erased_at="2022-01-20T02:00:00.000000Z", details_erased_by="li")
        body = {"poll_id": closed_poll, "details_erased_at": changes["details_erased_at"]}
        await route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    await amend_listing(console, closed_poll, changes)
    await console.route(re.compile(r".*/staff/api/polls/[a-z0-9-]+/erase$"), erase)
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    button = closed.get_by_role("button", name="Erase personal details")
    await expect(closed.get_by_role("button", name="Download winners CSV")).to_be_visible()
    await expect(button).to_be_disabled()

    confirm = closed.get_by_label("Poll id, to confirm the erasure")
    await confirm.fill(closed_poll + "x")
    await expect(button).to_be_disabled()
    await confirm.fill(closed_poll)
    await button.click()

    await expect(closed).to_contain_text(
        "Entrants' names and numbers were erased on 20 Jan 2022, 10:00 by li"
    )
    assert sent == [{"confirm": closed_poll}]
    await expect(closed.get_by_role("button", name="Download winners CSV")).to_be_hidden()
    await expect(button).to_be_hidden()


@pytest.mark.parametrize(
    ("histogram", "bars"), [({"0": 0}, []), ({"0": 2, "1": 0, "2": 3}, ["2", "0", "3"])]
)
async def test_entries_by_days_voted_are_bars_or_say_there_are_none(
    console: Page,
    gateway_url: str,
    staff_token: str,
    closed_poll: str,
    histogram: dict[str, int],
    bars: list[str],
) -> None:
    entries = sum(histogram.values())
    await amend_listing(console, closed_poll, {"days_histogram": histogram, "entries": entries})
    await sign_in(console, gateway_url, staff_token)
    chart = card(console, closed_poll).locator(".histogram")
    columns = chart.locator(".bar-col")
    if not bars:
        await expect(chart).to_have_text("No entries yet.")
        await expect(columns).to_have_count(0)
        return
    await expect(columns).to_have_count(len(bars))
    for days, (column, n) in enumerate(zip(await columns.all(), bars, strict=True)):
        await expect(column).to_have_attribute("title", f"{n} entries voted on {days} day(s)")


async def test_a_poll_without_a_prize_draw_shows_its_window_page_and_count(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The stack's polls all have a draw; the console is shown the closed one without.
    await amend_listing(console, closed_poll, {"lottery": False, "state": "closed"})
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await expect(closed.locator(".state")).to_have_text("closed")
    await expect(closed).to_contain_text("20 Dec 2021, 09:00 → 8 Jan 2022, 09:00 (Asia/Shanghai)")
    await expect(closed).to_contain_text("this poll has no prize draw")
    address = f"{gateway_url}/polls/{closed_poll}"
    await expect(closed.get_by_role("link", name=address)).to_be_visible()
    await expect(closed.locator("table.count tbody tr")).to_have_count(4)
    await expect(closed.get_by_role("heading", name="Count")).to_be_visible()
    for lottery_part in ("Entries by days voted", "Draw", "Winners"):
        await expect(closed.get_by_role("heading", name=lottery_part, exact=True)).to_be_hidden()
    await expect(closed.get_by_text("Commitment", exact=True)).to_be_hidden()
    await assert_accessible(console, "the staff console, a poll without a prize draw")


# The innermost elements reaching past the screen's right edge, to name what pushes out.
TOO_WIDE = """() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter((e) => ![...e.children].some((c) => c.getBoundingClientRect().right >
    document.documentElement.clientWidth + 1))
  .slice(0, 5)
  .map((e) => e.tagName + "." + e.className + ": " + (e.textContent || "").slice(0, 60))"""

WINNER = {
    "rank": 1,
    "entry_id": "9f2c4e0b7a1d3c5e8f6a2b4d6c8e0a1f",
    "name_masked": "欧阳**",
    "phone_masked": "138****5678",
}


# Entries by days voted over a campaign of three weeks: 22 columns.
THREE_WEEKS = {str(days): 3 * days + 1 for days in range(22)}


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "awaiting_draw", "drawn_at": None, "days_histogram": THREE_WEEKS},
        {
            "state": "drawn",
            "winners": [WINNER] * 3,
            "reserve_list": [WINNER],
            "days_histogram": THREE_WEEKS,
        },
    ],
    ids=["awaiting_draw", "drawn"],
)
async def test_on_a_phone_the_console_fits_the_screen(
    browser: Browser,
    gateway_url: str,
    staff_token: str,
    closed_poll: str,
    changes: dict[str, Any],
) -> None:
    context = await browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = await context.new_page()
    try:
        await amend_listing(page, closed_poll, changes)
        await sign_in(page, gateway_url, staff_token)
        await expect(card(page, closed_poll).locator("table.count tbody tr")).to_have_count(4)
        widths = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        wide = await page.evaluate(TOO_WIDE)
        assert widths[0] <= widths[1], f"the console scrolls sideways on a phone: {widths} {wide}"
    finally:
        await context.close()


async def test_what_staff_type_survives_the_cards_being_redrawn(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # Cards are redrawn on Refresh and at any poll's opening or close, maybe mid-typing.
    await amend_listing(console, closed_poll, {"state": "awaiting_draw", "drawn_at": None})
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await closed.get_by_label("Optional public entropy").fill("SZSE 14012.34")
    await closed.get_by_label("Poll id", exact=True).fill(closed_poll)
    await expect(closed.get_by_role("button", name="Draw winners")).to_be_enabled()

    await closed.evaluate("card => { card.dataset.before = 'refresh'; }")
    # A reload as the timers make one: the typing hand and the focus stay where they are.
    await console.evaluate("document.getElementById('refresh').click()")
    await expect(console.locator("section.poll[data-before]")).to_have_count(0)  # redrawn
    closed = card(console, closed_poll)
    await expect(closed.get_by_label("Optional public entropy")).to_have_value("SZSE 14012.34")
    await expect(closed.get_by_label("Poll id", exact=True)).to_have_value(closed_poll)
    await expect(closed.get_by_label("Poll id", exact=True)).to_be_focused()
    await expect(closed.get_by_role("button", name="Draw winners")).to_be_enabled()


async def test_a_prize_draw_poll_not_yet_open_reads_as_upcoming(
    console: Page, gateway_url: str, staff_token: str
) -> None:
    """The lottery's own state is "open" from before voting opens until the close."""
    opens = datetime.now(UTC) + timedelta(days=3)
    changes = {"state": "open", "voting_state": "upcoming", "opens_at": format_utc(opens)}
    await amend_listing(console, DEMO_POLL, changes)
    await sign_in(console, gateway_url, staff_token)
    await expect(card(console, DEMO_POLL).locator('[data-field="state"]')).to_have_text("upcoming")
