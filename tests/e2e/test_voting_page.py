"""A citizen votes from a phone in a real browser, through the gateway.

The captcha is answered the way the load generator and rehearsals do it: computed from the
secret and the id the page shows, since a test cannot read the picture.
Screenshots of what the voter saw are kept in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Browser, BrowserContext, FloatRect, Page, Route, expect

from scripts.stack.settings import DEMO_POLL
from shared.captcha import expected_answer
from shared.catalog import Poll, load_catalog
from tests.support.a11y import assert_accessible
from tests.support.http import vote_as_a_new_voter

pytestmark = pytest.mark.e2e

DECISION_TIMEOUT_MS = 20_000
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
NEW_CAPTCHA_ID = """previous => {
  const id = document.getElementById("captcha-image").dataset.captchaId;
  return id && id !== previous ? id : null;
}"""


@pytest.fixture(scope="session")
def demo_poll(polls_file: Path) -> Poll:
    """The demo poll as the stack's catalog has it."""
    poll = load_catalog(polls_file).get(DEMO_POLL)
    assert poll is not None, f"{polls_file} has no {DEMO_POLL}"
    return poll


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    # A fresh context is a new device: empty storage, so a new anonymous voter. The phone's
    # own zone is not Beijing, so times on the page must come from the poll's zone.
    context = await browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
        timezone_id="America/New_York",
    )
    yield context
    await context.close()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"voting-page-{name}.png", full_page=True)


async def type_captcha(page: Page, secret: str, previous: str) -> str:
    """Answer the captcha on screen once a new one (not `previous`) has loaded."""
    handle = await page.wait_for_function(NEW_CAPTCHA_ID, arg=previous)
    captcha_id = await handle.json_value()
    assert isinstance(captcha_id, str)
    await page.get_by_label("验证码", exact=True).fill(expected_answer(secret, captcha_id))
    return captcha_id


async def test_vote_then_daily_limit_then_english(
    phone: BrowserContext, gateway_url: str, captcha_secret: str, demo_poll: Poll
) -> None:
    # A failure screenshot left by an earlier run would sit beside this run's own.
    (ARTIFACTS / "voting-page-failure.png").unlink(missing_ok=True)
    page = await phone.new_page()
    try:
        await _vote_then_daily_limit_then_english(page, gateway_url, captcha_secret, demo_poll)
    except BaseException:
        await screenshot(page, "failure")
        raise


async def _vote_then_daily_limit_then_english(
    page: Page, gateway_url: str, secret: str, demo_poll: Poll
) -> None:
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    await expect(page.get_by_role("heading", level=1)).to_have_text(demo_poll.title)
    ratings = page.get_by_role("group", name="请选择一项评价")
    for label in ("优", "良", "中", "差"):
        await expect(ratings.get_by_role("radio", name=label, exact=True)).to_be_visible()
    await expect(page.locator("#countdown")).to_contain_text("距投票截止还有")
    await page.get_by_role("button", name="提交投票").click()
    await expect(page.locator("#choice-error")).to_be_visible()
    await assert_accessible(page, "the voting page, its errors shown")

    # First vote of the day: recorded.
    outcome = page.locator("#outcome")
    await ratings.get_by_role("radio", name="优", exact=True).check()
    first_captcha = await type_captcha(page, secret, previous="")
    await page.get_by_role("button", name="提交投票").click()
    await expect(outcome).to_contain_text("投票成功", timeout=DECISION_TIMEOUT_MS)
    await expect(outcome).to_contain_text("投票编号")
    await expect(outcome).to_contain_text(re.compile(r"投票日：\d{4}年\d{1,2}月\d{1,2}日"))
    await screenshot(page, "1-accepted-zh")
    await assert_accessible(page, "the voting page, the vote accepted")

    # Second vote the same day: refused, with the hour to come back on Beijing time.
    await ratings.get_by_role("radio", name="良", exact=True).check()
    await type_captcha(page, secret, previous=first_captcha)
    await page.get_by_role("button", name="提交投票").click()
    await expect(outcome).to_contain_text("您今天已经投过票了", timeout=DECISION_TIMEOUT_MS)
    await expect(outcome).to_contain_text(
        re.compile(r"请在 \d{4}年\d{1,2}月\d{1,2}日 00:00（北京时间）之后再来投票")
    )
    await expect(outcome).not_to_contain_text("投票成功")
    await screenshot(page, "2-daily-limit-zh")
    await assert_accessible(page, "the voting page, the vote refused")

    # The same page in English: this device has used up today, and the page says so
    # instead of offering a vote that would be turned away.
    captcha_requests = count_captcha_requests(page)
    await page.get_by_role("link", name="English").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_role("heading", name="Your rating")).to_be_visible()
    await expect(outcome).to_contain_text("You have voted today")
    await expect(outcome).to_contain_text(re.compile(r"Voting day: \d{1,2} \w{3} \d{4}"))
    await expect(outcome).to_contain_text(
        re.compile(r"You can vote again after \d{1,2} \w{3} \d{4}, 00:00 \(Beijing time\)")
    )
    await expect(page.get_by_role("button", name="Submit vote")).to_be_hidden()
    assert captcha_requests == [], "a page with no vote to cast still fetched a captcha"
    await screenshot(page, "3-voted-today-en")
    await assert_accessible(page, "the voting page in English, voted today")

    # The choice of language is remembered on the next visit.
    await page.goto(f"{gateway_url}/")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    english_title = demo_poll.text("title", "en").value
    await expect(page.get_by_role("link", name=english_title, exact=True)).to_have_attribute(
        "href", f"/polls/{DEMO_POLL}?lang=en"
    )


# Records when each of the page's fetch calls started and when its answer came, on the
# page's own clock, so a test can tell what the page asked for after what.
WATCH_FETCH = """(() => {
  const calls = [];
  window.__fetches = calls;
  const original = window.fetch;
  window.fetch = async (input, init) => {
    const method = (init && init.method) || "GET";
    const call = { method, url: String(input), start: performance.now(), end: null };
    calls.push(call);
    const response = await original(input, init);
    call.end = performance.now();
    return response;
  };
})()"""


async def vote_good(page: Page, secret: str) -> None:
    """Vote 良 on the open page with the captcha on screen, and see it accepted."""
    ratings = page.get_by_role("group", name="请选择一项评价")
    await ratings.get_by_role("radio", name="良", exact=True).check()
    await type_captcha(page, secret, previous="")
    await page.get_by_role("button", name="提交投票").click()
    await expect(page.locator("#outcome")).to_contain_text("投票成功", timeout=DECISION_TIMEOUT_MS)


async def test_after_a_vote_the_page_makes_no_read_that_could_not_tell_it_anything(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    # Each look at a vote's status or at a draw entry is a database read. Just after the
    # 202 the judge has not read the vote yet, so a look then could only say "pending";
    # and a voter who has not entered the draw has no entry to show the day counted on.
    page = await phone.new_page()
    await page.add_init_script(WATCH_FETCH)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await vote_good(page, captcha_secret)
    await page.wait_for_timeout(3000)  # past an entrant's look, 2 s after the decision

    calls = await page.evaluate("window.__fetches")
    vote = next(c for c in calls if c["method"] == "POST" and c["url"].endswith("/votes"))
    looks = [c for c in calls if c["method"] == "GET" and "/api/v1/votes/" in c["url"]]
    assert looks, "the page asked for the decision"
    assert looks[0]["start"] - vote["end"] >= 290, (vote, looks)
    assert [c for c in calls if c["url"].endswith("/lottery/entry")] == []


async def enter_the_draw(page: Page, gateway_url: str, name: str, prefix: str) -> str:
    """Open the voting page and enter the draw with a number never entered before; the
    number."""
    number = prefix + "".join(random.choices(string.digits, k=8))
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.get_by_label("姓名").fill(name)
    await page.get_by_label("手机号码").fill(number)
    await page.get_by_role("button", name="报名抽奖").click()
    status = page.locator("#lottery-status")
    await expect(status).to_contain_text(f"已报名：{number[:3]}****{number[-4:]}")
    await expect(status).to_contain_text("已计入投票天数：0 天")
    return number


async def test_an_entrant_sees_the_day_counted_after_voting(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    await enter_the_draw(page, gateway_url, "赵六", "139")

    await vote_good(page, captcha_secret)
    await expect(page.locator("#lottery-status")).to_contain_text(
        "已计入投票天数：1 天", timeout=10_000
    )


async def test_an_entrant_sees_the_day_counted_when_the_draw_counts_it_late(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    # The lottery is behind (restarting, catching up): the entry still lacks the day of a
    # vote already accepted when the page first looks, 2 s after the decision.
    page = await phone.new_page()
    stale_answers = 1
    counted_looks: list[float] = []

    async def lagging_lottery(route: Route) -> None:
        nonlocal stale_answers
        if route.request.method != "GET":
            await route.continue_()
            return
        response = await route.fetch()
        entry = await response.json()
        if entry.get("days") and stale_answers:
            stale_answers -= 1
            await route.fulfill(response=response, json={**entry, "days": 0, "last_day": None})
            return
        if entry.get("days"):
            counted_looks.append(asyncio.get_running_loop().time())
        await route.fulfill(response=response)

    await page.route(re.compile(rf".*/api/v1/polls/{DEMO_POLL}/lottery/entry$"), lagging_lottery)
    await enter_the_draw(page, gateway_url, "钱八", "136")

    await vote_good(page, captcha_secret)
    status = page.locator("#lottery-status")
    await expect(status).to_contain_text("已计入投票天数：1 天", timeout=25_000)
    assert stale_answers == 0, "the first look was answered as the lagging lottery would"
    # Once the day shows as counted the page stops looking (the next look would have come
    # 4.5 s after the last).
    await page.wait_for_timeout(5000)
    assert len(counted_looks) == 1, counted_looks


async def test_an_entrant_whose_entry_did_not_load_sees_the_day_counted_after_voting(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    number = await enter_the_draw(page, gateway_url, "孙九", "135")

    # Back later on a bad connection: the entry's lookup at load is lost.
    failed_lookups = 0

    async def lost_once(route: Route) -> None:
        nonlocal failed_lookups
        if route.request.method == "GET" and not failed_lookups:
            failed_lookups += 1
            await route.abort("connectionreset")
            return
        await route.continue_()

    await page.route(re.compile(rf".*/api/v1/polls/{DEMO_POLL}/lottery/entry$"), lost_once)
    await page.reload()
    await expect(page.get_by_label("手机号码")).to_be_visible()  # not known as entered
    assert failed_lookups == 1

    await vote_good(page, captcha_secret)
    status = page.locator("#lottery-status")
    await expect(status).to_contain_text(f"已报名：{number[:3]}****{number[-4:]}")
    await expect(status).to_contain_text("已计入投票天数：1 天", timeout=25_000)


def count_captcha_requests(page: Page) -> list[str]:
    """A list that fills with the captcha requests `page` makes from now on."""
    seen: list[str] = []
    page.on(
        "request", lambda request: seen.append(request.url) if "/captcha" in request.url else None
    )
    return seen


async def test_the_english_page_offers_the_vote(
    phone: BrowserContext, gateway_url: str, demo_poll: Poll
) -> None:
    page = await phone.new_page()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}?lang=en")
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        demo_poll.text("title", "en").value
    )
    await expect(page.get_by_role("heading", name="Your rating")).to_be_visible()
    english = page.get_by_role("group", name="Choose one rating")
    for label in ("Excellent", "Good", "Fair", "Poor"):
        await expect(english.get_by_role("radio", name=label, exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Submit vote")).to_be_visible()
    await expect(page.get_by_label("Verification code", exact=True)).to_be_visible()
    await expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("^data:"))
    await screenshot(page, "3-english")


@pytest.mark.parametrize("width", [320, 360, 390, 414])
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_the_captcha_buttons_stay_side_by_side_on_narrow_phones(
    phone: BrowserContext, gateway_url: str, width: int, lang: str
) -> None:
    # The picture and its two buttons do not fit one row on most phones: the buttons move
    # below it together instead of one hanging on a line of its own.
    page = await phone.new_page()
    await page.set_viewport_size({"width": width, "height": 844})
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}?lang={lang}")
    await expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("^data:"))
    boxes: dict[str, FloatRect] = {}
    for name in ("captcha-refresh", "captcha-listen", "captcha-answer"):
        box = await page.locator(f"#{name}").bounding_box()
        assert box is not None, name
        boxes[name] = box
    refresh, listen = boxes["captcha-refresh"], boxes["captcha-listen"]
    assert refresh["y"] == listen["y"], (width, lang, refresh, listen)
    assert refresh["x"] + refresh["width"] <= listen["x"]
    assert listen["x"] + listen["width"] <= width
    assert boxes["captcha-answer"]["y"] >= listen["y"] + listen["height"]
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
    if width == 360:
        await screenshot(page, f"captcha-360-{lang}")


async def test_a_voter_who_cannot_read_the_picture_hears_the_code_and_votes(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    handle = await page.wait_for_function(NEW_CAPTCHA_ID, arg="")
    captcha_id = await handle.json_value()
    listen = page.get_by_role("button", name="听语音")
    async with page.expect_response(re.compile(r"/api/v1/captcha/[^/]+/audio$")) as spoken:
        await listen.click()
    response = await spoken.value
    assert response.status == 200
    assert response.headers["content-type"] == "audio/wav"
    assert captcha_id in response.url, "the sound is of the code on screen"
    await page.wait_for_timeout(500)
    await expect(page.locator("#captcha-error")).to_be_hidden()  # it played
    await expect(page.locator("#captcha-hint")).to_contain_text("听语音")

    # What was heard is what is judged: the same id, answered, votes.
    await page.get_by_role("group", name="请选择一项评价").get_by_role("radio", name="良").check()
    await page.get_by_label("验证码", exact=True).fill(expected_answer(captcha_secret, captcha_id))
    await page.get_by_role("button", name="提交投票").click()
    await expect(page.locator("#outcome")).to_contain_text("投票成功", timeout=DECISION_TIMEOUT_MS)


SAVE_SESSION = """async () => {
  const response = await fetch("/api/v1/session", { method: "POST" });
  const session = await response.json();
  localStorage.setItem("votes.voter", JSON.stringify(session));
  return session.voter_id;
}"""
REMEMBER = (
    """([poll, record]) => localStorage.setItem("votes.voted." + poll, JSON.stringify(record))"""
)


async def test_a_used_up_day_is_remembered_for_its_voter_until_the_next_day(
    phone: BrowserContext, gateway_url: str, polls_file: Path
) -> None:
    poll = load_catalog(polls_file).get(DEMO_POLL)
    assert poll is not None
    zone = ZoneInfo(poll.timezone)
    page = await phone.new_page()
    # The page's clock, so the test can move it past midnight on the poll's clock.
    await page.clock.install()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    voter_id = await page.evaluate(SAVE_SESSION)
    today = datetime.now(zone).date()
    form = page.locator("#vote-form")
    outcome = page.locator("#outcome")

    async def visit_with(record: dict[str, Any]) -> None:
        await page.evaluate(REMEMBER, [DEMO_POLL, record])
        await page.reload()
        await expect(page.get_by_role("heading", level=1)).to_be_visible()

    # Another voter's day on this device, or an earlier day of this voter: the vote is open.
    other = {"voter_id": "v-someone-else", "day": today.isoformat(), "votes": ["a"], "full": False}
    await visit_with(other)
    await expect(form).to_be_visible()
    earlier = {"voter_id": voter_id, "day": (today - timedelta(days=1)).isoformat(), "votes": ["a"]}
    await visit_with({**earlier, "full": True})
    await expect(form).to_be_visible()

    # This voter's own day, used up: the page says so and asks for no captcha.
    captcha_requests = count_captcha_requests(page)
    await visit_with({"voter_id": voter_id, "day": today.isoformat(), "votes": [], "full": True})
    await expect(outcome).to_contain_text("今天已投票")
    await expect(form).to_be_hidden()
    assert captcha_requests == []

    # Once the next day begins on the poll's clock, the form comes back by itself.
    midnight = datetime.combine(today + timedelta(days=1), time(0), zone)
    await page.clock.fast_forward(
        int((midnight - datetime.now(zone)).total_seconds() * 1000) + 20_000
    )
    await expect(form).to_be_visible()
    await expect(page.locator("#captcha-image")).to_have_attribute("src", re.compile("^data:"))
    await expect(outcome).to_be_empty()


async def test_the_page_s_results_follow_votes_as_they_are_counted(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}?lang=en")
    total = page.locator("#results-total")
    await expect(total).to_have_text(re.compile(r"^[\d,]+ votes? in total$"))
    before = int(re.sub(r"\D", "", await total.inner_text()))

    # Another voter's vote, counted while this page stays open: the live stream shows it.
    await asyncio.to_thread(vote_as_a_new_voter, gateway_url, DEMO_POLL, captcha_secret, "good")
    await page.wait_for_function(
        "n => Number(document.getElementById('results-total').textContent.replace(/\\D/g, '')) > n",
        arg=before,
        timeout=DECISION_TIMEOUT_MS,
    )


async def test_a_page_refused_the_live_stream_reads_the_results_every_few_seconds(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    # What a results server holding its most viewers answers (results_stream_full).
    async def full(route: Route) -> None:
        problem = {"type": "/problems/results_stream_full", "title": "Busy", "status": 503}
        await route.fulfill(status=503, json={**problem, "code": "results_stream_full"})

    page = await phone.new_page()
    await page.route(re.compile(rf".*/api/v1/polls/{DEMO_POLL}/results/stream$"), full)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}?lang=en")
    total = page.locator("#results-total")
    await expect(total).to_have_text(re.compile(r"^[\d,]+ votes? in total$"))
    before = int(re.sub(r"\D", "", await total.inner_text()))

    await asyncio.to_thread(vote_as_a_new_voter, gateway_url, DEMO_POLL, captcha_secret, "poor")
    await page.wait_for_function(  # the page reads the document every 15 s
        "n => Number(document.getElementById('results-total').textContent.replace(/\\D/g, '')) > n",
        arg=before,
        timeout=30_000,
    )


def final_results(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "poll_id": DEMO_POLL,
        "counts": counts,
        "total": sum(counts.values()),
        "as_of": "2026-11-27T03:00:00.000000Z",
        "final": True,
    }


@pytest.mark.parametrize(
    ("lang", "counts", "rows", "total"),
    [
        (
            "en",
            {"excellent": 1, "good": 0, "fair": 2, "poor": 0},
            ["1 vote · 33.3%", "0 votes · 0.0%", "2 votes · 66.7%", "0 votes · 0.0%"],
            "3 votes in total",
        ),
        (
            "en",
            {"excellent": 0, "good": 1, "fair": 0, "poor": 0},
            ["0 votes · 0.0%", "1 vote · 100.0%", "0 votes · 0.0%", "0 votes · 0.0%"],
            "1 vote in total",
        ),
        (
            "zh",
            {"excellent": 1, "good": 0, "fair": 2, "poor": 1},
            ["1 票 · 25.0%", "0 票 · 0.0%", "2 票 · 50.0%", "1 票 · 25.0%"],
            "共 4 票",
        ),
    ],
)
# Older in-app browsers of messaging apps have no Intl.PluralRules.
@pytest.mark.parametrize("plural_rules", [True, False], ids=["plural-rules", "no-plural-rules"])
async def test_counts_read_in_the_language_s_plural_forms(
    phone: BrowserContext,
    gateway_url: str,
    lang: str,
    counts: dict[str, int],
    rows: list[str],
    total: str,
    plural_rules: bool,
) -> None:
    page = await phone.new_page()
    if not plural_rules:
        await page.add_init_script("delete Intl.PluralRules;")

    async def answer(route: Route) -> None:
        await route.fulfill(json=final_results(counts))

    await page.route(re.compile(rf".*/api/v1/polls/{DEMO_POLL}/results$"), answer)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}?lang={lang}")
    await expect(page.locator("#results-total")).to_have_text(total)
    await expect(page.locator("#results-bars .bar-count")).to_have_text(rows)
    # On the poll's clock, named: the phone's own zone (New York) is not Beijing.
    as_of = (
        "Updated 27 Nov 2026, 11:00 (Beijing time)"
        if lang == "en"
        else "更新于 2026年11月27日 11:00（北京时间）"
    )
    await expect(page.locator("#results-status")).to_contain_text(as_of)


MY_ENTRY = "entry-2"
DRAWN = {
    "commitment": "0" * 64,
    "prize": "青年文化盲盒",
    "prizes": 30,
    "reserves": 10,
    "state": "drawn",
    "entries": 2,
    "drawn_at": "2022-01-08T02:00:00.000000Z",
    "winners": [
        {"rank": 1, "entry_id": "entry-1", "name_masked": "张*", "phone_masked": "138****0001"},
        {"rank": 2, "entry_id": MY_ENTRY, "name_masked": "李*", "phone_masked": "139****0002"},
    ],
    "reserve_list": [],
}
# A device that entered the draw before the close: its voter token is in storage.
ENTERED_DEVICE = """localStorage.setItem("votes.voter", JSON.stringify({
  voter_token: "token", voter_id: "voter", expires_at: "2099-01-01T00:00:00Z"}));"""


async def serve_lottery(page: Page, poll: str, lottery: dict[str, Any]) -> None:
    """The lottery service's public view and this device's entry, as fixed documents."""

    async def view(route: Route) -> None:
        await route.fulfill(json={**lottery, "poll_id": poll})

    async def entry(route: Route) -> None:
        await route.fulfill(json={"entry_id": MY_ENTRY, "phone_masked": "139****0002", "days": 3})

    await page.route(re.compile(rf".*/api/v1/polls/{poll}/lottery$"), view)
    await page.route(re.compile(rf".*/api/v1/polls/{poll}/lottery/entry$"), entry)


async def test_a_page_left_open_after_the_close_shows_the_draw_once_it_is_made(
    phone: BrowserContext, gateway_url: str, closed_poll: str
) -> None:
    page = await phone.new_page()
    await page.clock.install()
    lottery = {**DRAWN, "state": "awaiting_draw", "drawn_at": None, "winners": []}
    await serve_lottery(page, closed_poll, lottery)
    await page.goto(f"{gateway_url}/polls/{closed_poll}?lang=en")
    draw = page.locator("#lottery-draw")
    await expect(draw).to_contain_text("the winners will be shown here")

    lottery.update(DRAWN)  # staff make the draw while the page stays open
    await page.clock.fast_forward("00:31")
    await expect(draw).to_contain_text("The draw was made on 8 Jan 2022, 10:00 (Beijing time).")
    await expect(draw.locator("ol.winners li")).to_have_count(2)


@pytest.mark.parametrize("entered", [True, False])
async def test_after_the_draw_the_page_lists_the_winners_and_tells_a_winner(
    phone: BrowserContext, gateway_url: str, closed_poll: str, entered: bool
) -> None:
    page = await phone.new_page()
    if entered:
        await page.add_init_script(ENTERED_DEVICE)
    await serve_lottery(page, closed_poll, DRAWN)
    await page.goto(f"{gateway_url}/polls/{closed_poll}?lang=en")
    draw = page.locator("#lottery-draw")
    await expect(draw).to_contain_text("The draw was made on 8 Jan 2022, 10:00 (Beijing time).")
    await expect(draw.locator("ol.winners li")).to_have_text(
        ["张*, 138****0001", "李*, 139****0002"]
    )
    audit = draw.get_by_role("link", name=re.compile("audit record"))
    await expect(audit).to_have_attribute("href", f"/api/v1/polls/{closed_poll}/lottery/audit")
    won = draw.get_by_text("Congratulations, you won!")
    if entered:
        await expect(won).to_be_visible()
        await screenshot(page, "4-draw-winner-en")
    else:
        await expect(won).to_have_count(0)


async def test_before_the_draw_the_page_says_the_winners_will_be_shown(
    phone: BrowserContext, gateway_url: str, closed_poll: str
) -> None:
    page = await phone.new_page()
    await serve_lottery(page, closed_poll, {**DRAWN, "state": "awaiting_draw", "winners": []})
    await page.goto(f"{gateway_url}/polls/{closed_poll}?lang=zh")
    draw = page.locator("#lottery-draw")
    await expect(draw).to_have_text("投票已结束，抽奖将公开进行，中奖名单公布后会显示在这里。")


async def test_a_draw_nobody_qualified_for_says_so(
    phone: BrowserContext, gateway_url: str, closed_poll: str
) -> None:
    page = await phone.new_page()
    await serve_lottery(page, closed_poll, {**DRAWN, "winners": [], "entries": 0})
    await page.goto(f"{gateway_url}/polls/{closed_poll}?lang=en")
    draw = page.locator("#lottery-draw")
    await expect(draw).to_contain_text("No entry qualified")
    await expect(draw.locator("ol.winners")).to_have_count(0)


async def test_an_entered_voter_can_correct_the_number_while_entries_are_open(
    phone: BrowserContext, gateway_url: str
) -> None:
    page = await phone.new_page()

    async def slow_lookup(route: Route) -> None:
        if route.request.method == "GET":
            await asyncio.sleep(1.5)  # a slow network: the entry's lookup lands late
        await route.continue_()

    await page.route(re.compile(r".*/lottery/entry$"), slow_lookup)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    status = page.locator("#lottery-status")
    await page.get_by_label("姓名").fill("王五")
    await page.get_by_label("手机号码").fill("137 0013 7000")
    async with page.expect_response(
        lambda r: r.url.endswith("/lottery/entry") and r.request.method == "GET"
    ) as late_lookup:
        await page.get_by_role("button", name="报名抽奖").click()
        await expect(status).to_contain_text("已报名：137****7000")
        await expect(page.get_by_label("手机号码")).to_be_hidden()

        # The number was mistyped: the entry is corrected from the same page, at once.
        await page.get_by_role("button", name="修改姓名或手机号").click()
        await expect(page.get_by_label("姓名")).to_be_focused()
    await late_lookup.value
    await expect(page.get_by_label("手机号码")).to_be_visible()
    await page.get_by_label("手机号码").fill("13700137001")
    await page.get_by_role("button", name="保存修改").click()
    await expect(status).to_contain_text("已报名：137****7001")
    await expect(page.get_by_label("手机号码")).to_be_hidden()

    # The service holds the correction: a later visit shows it.
    await page.reload()
    await expect(status).to_contain_text("已报名：137****7001")
    await expect(page.get_by_role("button", name="修改姓名或手机号")).to_be_visible()
    await assert_accessible(page, "the voting page, entered in the draw")


@pytest.mark.parametrize("path", ["/", "/?lang=en", "/polls/no-such-poll", "closed"])
async def test_the_other_pages_pass_the_accessibility_checks(
    phone: BrowserContext, gateway_url: str, closed_poll: str, path: str
) -> None:
    page = await phone.new_page()
    await page.goto(gateway_url + (f"/polls/{closed_poll}" if path == "closed" else path))
    await expect(page.get_by_role("heading", level=1)).to_be_visible()
    if path == "closed":  # what the script fills in: the final count and the draw
        await expect(page.locator("#results-total")).to_have_text(re.compile(r"^共 [\d,]+ 票$"))
        await expect(page.locator("#lottery-draw")).not_to_be_empty()
    await assert_accessible(page, path)


# What an older in-app browser of a messaging app lacks, among what the page could use.
OLDER_BROWSER = """
delete Intl.PluralRules;
delete Element.prototype.replaceChildren;
delete Document.prototype.replaceChildren;
delete DocumentFragment.prototype.replaceChildren;
"""


async def test_an_older_in_app_browser_can_vote_and_read_the_results(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    await page.add_init_script(OLDER_BROWSER)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await expect(page.locator("#results-total")).to_have_text(re.compile(r"^共 [\d,]+ 票$"))
    ratings = page.get_by_role("group", name="请选择一项评价")
    await ratings.get_by_role("radio", name="中", exact=True).check()
    await type_captcha(page, captcha_secret, previous="")
    await page.get_by_role("button", name="提交投票").click()
    outcome = page.locator("#outcome")
    await expect(outcome).to_contain_text("投票成功", timeout=DECISION_TIMEOUT_MS)
    await expect(outcome).to_contain_text(
        re.compile(r"\d{4}年\d{1,2}月\d{1,2}日 00:00（北京时间）")
    )
    assert errors == []


# A 1x1 PNG: the picture of a captcha served by a test.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def serve_page_at(page: Page, instant: datetime) -> None:
    """The voting page as the server renders it at `instant`: the page takes its clock
    from the server's (a phone's own may be wrong), so faking the phone's does not do."""

    async def rendered_then(route: Route) -> None:
        response = await route.fetch()
        html = re.sub(
            r'"server_now": ?"[^"]+"',
            f'"server_now":"{instant.astimezone(UTC).isoformat()}"',
            await response.text(),
        )
        await route.fulfill(response=response, body=html)

    await page.route(re.compile(rf".*/polls/{DEMO_POLL}$"), rendered_then)


async def test_a_vote_in_flight_at_the_close_is_followed_to_its_outcome(
    phone: BrowserContext, gateway_url: str, polls_file: Path
) -> None:
    """The page reloads itself at the close, but not under a voter whose vote is on its
    way: the outcome is shown and stays, with the closing day's words."""
    poll = load_catalog(polls_file).get(DEMO_POLL)
    assert poll is not None
    close = poll.closes_at
    page = await phone.new_page()
    await page.clock.install()
    await serve_page_at(page, close - timedelta(seconds=20))
    released = asyncio.Event()
    vote_id = "0b7c1d2e-0000-4000-8000-000000000001"

    async def captcha(route: Route) -> None:
        expires = (close + timedelta(minutes=5)).isoformat()
        await route.fulfill(
            status=201, json={"captcha_id": "c-1", "image": PIXEL, "expires_at": expires}
        )

    async def vote(route: Route) -> None:
        await released.wait()
        status_url = f"/api/v1/votes/{vote_id}"
        body = {"vote_id": vote_id, "status": "pending", "status_url": status_url}
        await route.fulfill(status=202, json=body)

    async def decision(route: Route) -> None:
        day = close.astimezone(ZoneInfo(poll.timezone)).date().isoformat()
        body = {"vote_id": vote_id, "poll_id": DEMO_POLL, "status": "accepted", "day": day}
        await route.fulfill(json={**body, "reason": None})

    await page.route(re.compile(r".*/api/v1/captcha$"), captcha)
    await page.route(re.compile(rf".*/api/v1/polls/{DEMO_POLL}/votes$"), vote)
    await page.route(re.compile(r".*/api/v1/votes/[^/]+$"), decision)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.evaluate("window.sameDocument = true")
    await page.get_by_role("radio", name="良", exact=True).check()
    await page.get_by_label("验证码", exact=True).fill("abcd")
    await page.get_by_role("button", name="提交投票").click()

    await page.clock.fast_forward(25_000)  # the close passes while the vote is on its way
    await expect(page.locator("#countdown")).to_contain_text("时间已到")
    released.set()
    outcome = page.locator("#outcome")
    await expect(outcome).to_contain_text("投票成功")
    await expect(outcome).to_contain_text("今天是最后一个投票日")
    await expect(outcome).not_to_contain_text("之后可以再次投票")
    await page.clock.fast_forward(5_000)
    assert await page.evaluate("window.sameDocument === true"), "the page reloaded"
    await expect(page.locator("#vote-form")).to_be_hidden()
    await expect(page.get_by_role("button", name="刷新页面")).to_be_visible()


async def test_a_vote_refused_before_it_was_recorded_keeps_its_captcha(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    refused: list[str] = []

    async def broker_down(route: Route) -> None:
        refused.append(route.request.url)
        problem = {"type": "/problems/broker_unavailable", "title": "Unavailable", "status": 503}
        body = {**problem, "detail": "retry", "code": "broker_unavailable"}
        await route.fulfill(status=503, json=body, headers={"Retry-After": "1"})

    votes = re.compile(rf".*/api/v1/polls/{DEMO_POLL}/votes$")
    await page.route(votes, broker_down)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.get_by_role("radio", name="中", exact=True).check()
    captcha_id = await type_captcha(page, captcha_secret, previous="")
    await page.get_by_role("button", name="提交投票").click()
    outcome = page.locator("#outcome")
    await expect(outcome).to_contain_text("本次投票没有被记录")
    assert refused
    image = page.locator("#captcha-image")
    await expect(image).to_have_attribute("data-captcha-id", captcha_id)
    assert await page.get_by_label("验证码", exact=True).input_value()

    # Sent again as it stands, the vote counts.
    await page.unroute(votes)
    await page.get_by_role("button", name="提交投票").click()
    await expect(outcome).to_contain_text("投票成功", timeout=DECISION_TIMEOUT_MS)


async def test_a_captcha_that_expired_while_the_phone_slept_is_renewed_before_voting(
    phone: BrowserContext, gateway_url: str, captcha_secret: str
) -> None:
    page = await phone.new_page()
    await page.clock.install()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.get_by_role("radio", name="优", exact=True).check()
    stale = await type_captcha(page, captcha_secret, previous="")
    # Asleep for six minutes: the clock moves on, but no timer of the frozen page runs.
    await page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    await page.clock.set_system_time(datetime.now(UTC) + timedelta(minutes=6))
    await page.get_by_role("button", name="提交投票").click()
    await expect(page.locator("#captcha-error")).to_contain_text("验证码已过期")
    await expect(page.locator("#outcome")).to_be_empty()
    fresh = await type_captcha(page, captcha_secret, previous=stale)
    assert fresh != stale


async def test_a_network_handing_out_too_many_sessions_is_asked_to_wait(
    phone: BrowserContext, gateway_url: str
) -> None:
    page = await phone.new_page()

    async def too_many(route: Route) -> None:
        problem = {"type": "/problems/rate_limited", "title": "Too many", "status": 429}
        await route.fulfill(status=429, json={**problem, "detail": "wait", "code": "rate_limited"})

    await page.route(re.compile(r".*/api/v1/session$"), too_many)
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.get_by_role("radio", name="优", exact=True).check()
    await page.get_by_label("验证码", exact=True).fill("abcd")
    loaded = await page.wait_for_function(NEW_CAPTCHA_ID, arg="")
    captcha_id = await loaded.json_value()
    await page.get_by_role("button", name="提交投票").click()
    await expect(page.locator("#outcome")).to_contain_text("请稍等一分钟后再试")
    await expect(page.locator("#captcha-image")).to_have_attribute("data-captcha-id", captcha_id)


async def test_a_name_with_characters_that_cannot_be_used_is_told_at_the_field(
    phone: BrowserContext, gateway_url: str
) -> None:
    page = await phone.new_page()
    await page.goto(f"{gateway_url}/polls/{DEMO_POLL}")
    await page.get_by_label("姓名").fill("王\u200b五")  # a zero-width space pasted from a chat
    await page.get_by_label("手机号码").fill("13700137002")
    await page.get_by_role("button", name="报名抽奖").click()
    await expect(page.locator("#lottery-name-error")).to_contain_text("不能使用的字符")
    await expect(page.get_by_label("姓名")).to_be_focused()
    await expect(page.locator("#lottery-status")).not_to_contain_text("稍后重试")
