"""The lottery service's own pure parts: timing, request bodies, days, the CSV, settings."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.applications import Starlette

from services.lottery import console_text
from services.lottery.bodies import parse_draw, parse_entry
from services.lottery.consumer import days_voted
from services.lottery.handlers import Lottery, WinnerRow
from services.lottery.main import LotterySettings, create_app
from services.lottery.pii import parse_keyring
from services.lottery.schedule import (
    LotteryState,
    counts_toward_days,
    days_histogram,
    lottery_state,
    require_drained,
    require_draw_time,
    require_entries_open,
)
from services.lottery.staff import StaffDesk, csv_cell, winners_csv
from shared.auth import StaffTokens
from shared.catalog import OPTION_LABELS, Catalog, Poll, parse_catalog
from shared.errors import ApiError, BadRequest, Conflict, Forbidden
from shared.events import VoteAccepted
from shared.http import Health, build_app

CST = timezone(timedelta(hours=8))
OPENS = datetime(2021, 12, 20, 9, 0, tzinfo=CST)
CLOSES = datetime(2022, 1, 8, 9, 0, tzinfo=CST)
CATALOG = f"""
polls:
  - id: futian
    title: 文化馆总分馆制建设
    options: [excellent, good, fair, poor]
    opens_at: {OPENS.isoformat()}
    closes_at: {CLOSES.isoformat()}
    timezone: Asia/Shanghai
    lottery: {{prizes: 30, prize: 青年文化盲盒, reserves: 10}}
"""


@pytest.fixture
def catalog() -> Catalog:
    return parse_catalog(CATALOG)


@pytest.fixture
def poll(catalog: Catalog) -> Poll:
    found = catalog.get("futian")
    assert found is not None
    return found


def code_of(error: pytest.ExceptionInfo[ApiError]) -> str:
    return error.value.instance_code


# ---------------------------------------------------------------- days and the clock


def test_the_last_millisecond_before_the_close_counts_and_the_close_does_not(poll: Poll) -> None:
    assert counts_toward_days(poll, CLOSES - timedelta(milliseconds=1))
    assert not counts_toward_days(poll, CLOSES)
    assert not counts_toward_days(poll, OPENS - timedelta(microseconds=1))
    assert counts_toward_days(poll, OPENS)


def vote(poll_id: str, voter: str, received_at: datetime) -> VoteAccepted:
    return VoteAccepted(
        vote_id=f"vote-{voter}-{received_at.timestamp()}",
        poll_id=poll_id,
        choice="good",
        voter_id=voter,
        day=received_at.astimezone(CST).date(),
        received_at=received_at,
        decided_at=received_at,
    )


def test_days_voted_keeps_only_known_polls_within_the_window(catalog: Catalog) -> None:
    # 16:30 UTC on 7 January is 00:30 on 8 January in Shanghai: the poll's day, not UTC's.
    past_midnight = datetime(2022, 1, 7, 16, 30, tzinfo=UTC)
    votes = [
        vote("futian", "a", past_midnight),
        vote("futian", "b", CLOSES),
        vote("unknown", "c", past_midnight),
    ]
    rows = days_voted(catalog, votes)
    assert [(r.poll_id, r.voter_id, r.day) for r in rows] == [("futian", "a", date(2022, 1, 8))]


def test_entries_are_taken_only_while_voting_is_open(poll: Poll) -> None:
    with pytest.raises(Forbidden) as early:
        require_entries_open(poll, OPENS - timedelta(seconds=1))
    with pytest.raises(Forbidden) as late:
        require_entries_open(poll, CLOSES)
    assert (code_of(early), code_of(late)) == ("poll_not_open", "poll_closed")
    require_entries_open(poll, CLOSES - timedelta(milliseconds=1))


@pytest.mark.parametrize(
    ("after_close", "code"),
    [
        (timedelta(seconds=-1), "poll_open"),
        (timedelta(0), "poll_settling"),
        (timedelta(seconds=4.999), "poll_settling"),
    ],
)
def test_the_draw_waits_for_the_close_and_its_grace(
    poll: Poll, after_close: timedelta, code: str
) -> None:
    with pytest.raises(Conflict) as refused:
        require_draw_time(poll, CLOSES + after_close)
    assert code_of(refused) == code


def test_the_draw_may_start_five_seconds_after_the_close(poll: Poll) -> None:
    require_draw_time(poll, CLOSES + timedelta(seconds=5))


def test_a_pipeline_with_records_left_refuses_the_draw_and_says_what_is_left() -> None:
    left = {"antifraud/votes.submitted": 3, "lottery/votes.accepted": 0}
    with pytest.raises(Conflict) as refused:
        require_drained(left)
    assert code_of(refused) == "pipeline_not_drained"
    assert refused.value.extra == {"left": left}
    require_drained({"antifraud/votes.submitted": 0, "lottery/votes.accepted": 0})


def test_lottery_state_follows_the_close_and_the_draw(poll: Poll) -> None:
    assert lottery_state(poll, OPENS - timedelta(days=1), drawn=False) is LotteryState.OPEN
    assert lottery_state(poll, CLOSES - timedelta(seconds=1), drawn=False) is LotteryState.OPEN
    assert lottery_state(poll, CLOSES, drawn=False) is LotteryState.AWAITING_DRAW
    assert lottery_state(poll, CLOSES, drawn=True) is LotteryState.DRAWN


def test_days_histogram_fills_the_gaps() -> None:
    assert days_histogram([]) == {0: 0}
    assert days_histogram([3, 0, 3, 1]) == {0: 1, 1: 1, 2: 0, 3: 2}


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=200))
def test_days_histogram_counts_every_entry_once(weights: list[int]) -> None:
    histogram = days_histogram(weights)
    assert sum(histogram.values()) == len(weights)
    assert all(histogram[w] >= 1 for w in weights)


# ---------------------------------------------------------------- request bodies


def test_an_entry_is_normalised() -> None:
    form = parse_entry({"name": "  张  三 ", "phone": "(+86) 138-1234 5678"})
    assert (form.name, form.phone) == ("张 三", "13812345678")
    assert "13812345678" not in repr(form) and "张" not in repr(form)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "张三", "phone": "12812345678"}, "invalid_phone"),
        ({"name": "张\u202e三", "phone": "13812345678"}, "invalid_name"),
        ({"name": "", "phone": "13812345678"}, "invalid_name"),
        ({"name": "张三"}, "invalid_body"),
        ({"name": "张三", "phone": "13812345678", "wechat": "x"}, "invalid_body"),
        ({"name": "张三", "phone": 13812345678}, "invalid_body"),
        (["张三", "13812345678"], "invalid_body"),
    ],
)
def test_a_bad_entry_is_refused_with_its_code_and_without_echoing_it(
    body: object, code: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_entry(body)
    assert code_of(refused) == code
    assert "12812345678" not in refused.value.detail
    assert "13812345678" not in refused.value.detail


def test_draw_options() -> None:
    assert parse_draw(None) == ""
    assert parse_draw({}) == ""
    assert parse_draw({"external_entropy": "深证成指 14012.34"}) == "深证成指 14012.34"
    assert parse_draw({"external_entropy": "字" * 1000}) == "字" * 1000
    for bad in ({"external_entropy": "x" * 1001}, {"entropy": "x"}, {"external_entropy": 7}):
        with pytest.raises(BadRequest):
            parse_draw(bad)


# ---------------------------------------------------------------- the staff export


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert [csv_cell(v) for v in ("+1", "-1", "@x", "张三", 3)] == [
        "'+1",
        "'-1",
        "'@x",
        "张三",
        "3",
    ]


def test_winners_csv_has_a_bom_a_header_and_full_details() -> None:
    rows = [
        WinnerRow(1, "winner", "a" * 32, "张三", "13812345678"),
        WinnerRow(1, "reserve", "b" * 32, "=cmd", "13912345678"),
    ]
    text = winners_csv(rows)
    assert text.startswith("\ufeff")
    parsed = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert parsed == [
        ["rank", "role", "entry_id", "name", "phone"],
        ["1", "winner", "a" * 32, "张三", "13812345678"],
        ["1", "reserve", "b" * 32, "'=cmd", "13912345678"],
    ]
    assert "13812345678" not in repr(rows)


# ---------------------------------------------------------------- settings and the console


def test_settings_require_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PII_KEY", "VOTER_TOKEN_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as missing:
        LotterySettings()
    assert {e["loc"][0] for e in missing.value.errors()} == {"pii_key", "voter_token_secret"}
    with pytest.raises(ValidationError):
        LotterySettings(pii_key="k", voter_token_secret="too short")
    assert LotterySettings(pii_key="k", voter_token_secret="s" * 32).lottery_port == 8084


def test_a_malformed_pii_key_stops_the_service_naming_the_variable(tmp_path: Path) -> None:
    polls = tmp_path / "polls.yaml"
    polls.write_text(CATALOG, encoding="utf-8")
    settings = LotterySettings(pii_key="not base64!", voter_token_secret="s" * 32, polls_file=polls)
    with pytest.raises(ValueError, match="PII_KEY"):
        create_app(settings)


@contextlib.asynccontextmanager
async def _no_lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


def console_client(catalog: Catalog) -> httpx.AsyncClient:
    cipher = parse_keyring(base64.b64encode(os.urandom(32)).decode())

    async def nothing_left(closed_at: datetime) -> dict[str, int]:
        return {}

    lottery = Lottery(catalog, cipher, lambda: CLOSES, nothing_left)
    desk = StaffDesk(lottery, StaffTokens("alice=" + "0" * 64))
    app = build_app("lottery", "test", desk.routes(), Health("lottery", []), _no_lifespan)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://lottery.test")


async def test_the_console_page_loads_and_its_data_needs_a_staff_token(catalog: Catalog) -> None:
    async with console_client(catalog) as client:
        page = await client.get("/staff/")
        script = await client.get("/staff/static/staff.js")
        data = await client.get("/staff/api/polls")
        wrong = await client.get("/staff/api/polls", headers={"Authorization": "Bearer nope"})
    assert page.status_code == 200 and "/staff/static/staff.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert (data.status_code, wrong.status_code) == (401, 403)
    # httpx asks for gzip and decodes it: both came compressed.
    assert page.headers["content-encoding"] == script.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("name", ["staff.js", "staff.css"])
async def test_the_console_names_its_assets_by_content_so_a_release_is_never_stale(
    catalog: Catalog, name: str
) -> None:
    async with console_client(catalog) as client:
        page = await client.get("/staff/")
        found = re.search(rf'"(/staff/static/{re.escape(name)}\?v=[0-9a-f]{{12}})"', page.text)
        assert found, f"the console refers to {name} by its version"
        pinned = await client.get(found.group(1))
        unversioned = await client.get(f"/staff/static/{name}")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert unversioned.headers["cache-control"] == "no-cache"


def console_strings(page: httpx.Response) -> dict[str, str]:
    found = re.search(
        r'<script type="application/json" id="console-strings">(.*?)</script>', page.text
    )
    assert found, "the console page carries its script's strings"
    strings = json.loads(found.group(1))
    assert isinstance(strings, dict)
    return strings


@pytest.mark.parametrize(
    ("query", "cookie", "html_lang", "heading"),
    [
        ("", None, "zh-CN", "网络评议 · 工作人员控制台"),
        ("?lang=en", None, "en", "Public review · staff console"),
        ("", "en", "en", "Public review · staff console"),
        ("?lang=zh", "en", "zh-CN", "网络评议 · 工作人员控制台"),
        ("?lang=fr", "klingon", "zh-CN", "网络评议 · 工作人员控制台"),
    ],
)
async def test_the_console_speaks_chinese_unless_english_is_asked_for(
    catalog: Catalog, query: str, cookie: str | None, html_lang: str, heading: str
) -> None:
    async with console_client(catalog) as client:
        if cookie:
            client.cookies.set("lang", cookie)
        page = await client.get("/staff/" + query)
    assert page.status_code == 200
    assert f'<html lang="{html_lang}">' in page.text
    assert f"<h1>{heading}</h1>" in page.text
    assert console_strings(page)["title"] == heading


def test_both_console_languages_have_the_same_strings_and_placeholders() -> None:
    assert set(console_text.STRINGS["zh"]) == set(console_text.STRINGS["en"])
    for key, zh in console_text.STRINGS["zh"].items():
        en = console_text.STRINGS["en"][key]
        assert set(re.findall(r"\{(\w+)\}", zh)) == set(re.findall(r"\{(\w+)\}", en)), key


def test_every_string_the_console_script_names_exists() -> None:
    script = (Path(console_text.__file__).parent / "static" / "staff.js").read_text("utf-8")
    named = set(re.findall(r'\bt\("(\w+)"', script)) | set(re.findall(r"\bS\.(\w+)", script))
    counted = set(re.findall(r'\btn\("(\w+)"', script))
    named |= {key + form for key in counted for form in ("_one", "_other")}
    assert named, 'the script reads its strings as t("key") or S.key'
    assert named <= set(console_text.STRINGS["zh"])
    # Looked up by name: "state_" + the poll's state, "option_" + a rating.
    assert {f"state_{state.value}" for state in LotteryState} <= set(console_text.STRINGS["zh"])
    assert {f"option_{option}" for option in OPTION_LABELS} <= set(console_text.STRINGS["zh"])
