"""Staff open the prize-draw console in a browser, sign in, and read each poll's draw.

The browser's own zone is New York: the console must show the poll's clock (the close
is "09:00" in Beijing), named, not the browser's.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Browser, Locator, Page, Route, expect

from shared.events import format_utc

pytestmark = pytest.mark.e2e


@pytest.fixture
async def console(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1100, "height": 900}, timezone_id="America/New_York"
    )
    yield await context.new_page()
    await context.close()


async def sign_in(page: Page, gateway_url: str, staff_token: str) -> None:
    await page.goto(f"{gateway_url}/staff/")
    await page.get_by_label("Staff token").fill(staff_token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def card(page: Page, poll_id: str) -> Locator:
    return page.locator("section.poll").filter(has=page.locator(f"code:text-is('{poll_id}')"))


async def test_signed_in_staff_see_each_draw_on_the_poll_s_clock(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await expect(closed).to_contain_text("20 Dec 2021, 09:00 → 8 Jan 2022, 09:00 (Asia/Shanghai)")
    await expect(closed.locator("code.hash")).to_have_text(re.compile(r"^[0-9a-f]{64}$"))


async def test_a_draw_without_entries_says_so_and_when_it_was_made(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The stack's own draw is made once for good, so this draw is served to the page.
    async def drawn(route: Route) -> None:
        response = await route.fetch()
        data = await response.json()
        for poll in data["polls"]:
            if poll["poll_id"] == closed_poll:
                poll.update(state="drawn", drawn_at="2022-01-08T02:00:00.000000Z")
                poll.update(winners=[], reserve_list=[])
        await route.fulfill(response=response, body=json.dumps(data))

    await console.route(re.compile(r".*/staff/api/polls$"), drawn)
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    await expect(closed.locator("dd[data-part='drawn']")).to_have_text("8 Jan 2022, 10:00")
    winners = closed.locator("tbody[data-field='winners'] td")
    await expect(winners).to_have_text(["None: the draw had no eligible entries."])
    reserves = closed.locator("tbody[data-field='reserve_list'] td")
    await expect(reserves).to_have_text(["None: no eligible entry was left over."])


async def test_a_console_left_open_over_the_close_brings_up_the_draw_by_itself(
    console: Page, gateway_url: str, staff_token: str, closed_poll: str
) -> None:
    # The first listing has the closed poll still open, closing in a minute; later ones
    # are the service's own. The page's clock is moved past the close, nothing clicked.
    listings = 0
    closes_at = datetime.now(UTC) + timedelta(minutes=1)

    async def still_open_at_first(route: Route) -> None:
        nonlocal listings
        listings += 1
        response = await route.fetch()
        data = await response.json()
        if listings == 1:
            for poll in data["polls"]:
                if poll["poll_id"] == closed_poll:
                    poll.update(state="open", closes_at=format_utc(closes_at), drawn_at=None)
        await route.fulfill(response=response, body=json.dumps(data))

    await console.clock.install()
    await console.route(re.compile(r".*/staff/api/polls$"), still_open_at_first)
    await sign_in(console, gateway_url, staff_token)
    closed = card(console, closed_poll)
    before_close = closed.locator("[data-part='before-close']")
    await expect(before_close).to_be_visible()

    await console.clock.fast_forward(70_000)
    await expect(before_close).to_be_hidden()
    await expect(closed.locator(".state")).not_to_have_text("open")
    assert listings == 2
