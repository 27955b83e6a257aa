"""The lottery service against the real Kafka broker and PostgreSQL.

The app runs in-process with its own schema, consumer groups and topics, so nothing here
meets the running stack's data; its clock is the test's, so "before the close" and "after
the close" are instants, not waits. Accepted votes are published to Kafka as antifraud
would publish them, with the `received_at` each case needs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.lottery.main import LotterySettings, Topology, create_app
from services.lottery.pii import entry_aad, parse_keyring
from services.lottery.rules import mask_phone
from shared.auth import VoterTokens
from shared.drain import PipelineProbe
from shared.events import VoteAccepted
from shared.kafka import client_options
from shared.pg import create_pool
from tests.conftest import random_vote_id, unique_name
from tests.support.commands import run_module
from tests.support.kafka import create_topics, eventually, produce

pytestmark = pytest.mark.integration

CST = timezone(timedelta(hours=8))
OPENS = datetime(2021, 12, 20, 9, 0, tzinfo=CST)
CLOSES = datetime(2022, 1, 8, 9, 0, tzinfo=CST)
DURING = datetime(2022, 1, 5, 12, 0, tzinfo=CST)
AFTER = CLOSES + timedelta(minutes=1)
POLLS = ("days", "union", "gate", "busy", "race", "flow", "verify", "erase")
# The lottery takes what Kafka holds as the votes before a close once the close's grace
# has passed (its draw-readiness refresh runs every second here). In these tests Kafka's
# clock is real and the service's is not, so each test of the drain check has a close of
# its own that no other test's clock passes, and sends its votes from before the close
# while the clock is still before it, as they would be sent.
OWN_CLOSES = {
    "gate": CLOSES + timedelta(days=1),
    "busy": CLOSES + timedelta(days=2),
}


def catalog_yaml() -> str:
    lottery = "{prizes: 2, prize: 青年文化盲盒, reserves: 1}"
    polls = [
        f"""  - id: {poll}
    title: Lottery test {poll}
    options: [excellent, good, fair, poor]
    opens_at: {OPENS.isoformat()}
    closes_at: {OWN_CLOSES.get(poll, CLOSES).isoformat()}
    timezone: Asia/Shanghai
    lottery: {lottery}
"""
        for poll in POLLS
    ]
    polls.append(
        f"""  - id: nolot
    title: No prize draw
    options: [excellent, good]
    opens_at: {OPENS.isoformat()}
    closes_at: {CLOSES.isoformat()}
"""
    )
    polls.append(
        f"""  - id: later
    title: Opens later
    options: [excellent, good]
    opens_at: {(CLOSES + timedelta(days=30)).isoformat()}
    closes_at: {(CLOSES + timedelta(days=60)).isoformat()}
    lottery: {lottery}
"""
    )
    return "polls:\n" + "".join(polls)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class RawRecords(logging.Handler):
    """Every log record as its unredacted text, to prove nothing sensitive is logged."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        self.lines.append(f"{record.getMessage()} {record.__dict__} {exc}")


@dataclass
class Lottery:
    client: httpx.AsyncClient
    clock: Clock
    topology: Topology
    settings: LotterySettings
    bootstrap: str
    pool: asyncpg.Pool
    tokens: VoterTokens
    staff: dict[str, str]
    public: list[str] = field(default_factory=list)

    def voter(self) -> tuple[str, dict[str, str]]:
        issued = self.tokens.issue(datetime.now(UTC))
        return issued.voter_id, {"Authorization": f"Bearer {issued.token}"}

    async def votes(self, poll: str, voter_id: str, *received: datetime) -> None:
        events = [accepted(poll, voter_id, at) for at in received]
        await produce(
            self.bootstrap,
            self.topology.accepted_topic,
            [(e.voter_id.encode(), e.model_dump_json().encode()) for e in events],
        )

    async def entry(self, poll: str, headers: dict[str, str]) -> dict[str, Any] | None:
        response = await self.client.get(f"/api/v1/polls/{poll}/lottery/entry", headers=headers)
        return dict(response.json()) if response.status_code == 200 else None

    async def days(self, poll: str, headers: dict[str, str]) -> int | None:
        entry = await self.entry(poll, headers)
        return int(entry["days"]) if entry is not None else None

    async def wait_days(self, poll: str, headers: dict[str, str], expected: int) -> None:
        async def check() -> bool:
            return await self.days(poll, headers) == expected

        await eventually(check, what=f"{expected} day(s) on the entry")

    async def enter(self, poll: str, headers: dict[str, str], phone: str, name: str) -> Any:
        response = await self.client.post(
            f"/api/v1/polls/{poll}/lottery/entry",
            json={"name": name, "phone": phone},
            headers=headers,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def wait_drained(self) -> None:
        probe = PipelineProbe(client_options(self.settings))
        await probe.start()
        try:

            async def drained() -> bool:
                return not any((await probe.total_lag(self.topology.drain_pairs())).values())

            await eventually(drained, what="the lottery group to commit every vote")
        finally:
            await probe.stop()


def accepted(poll: str, voter_id: str, received_at: datetime) -> VoteAccepted:
    return VoteAccepted(
        vote_id=random_vote_id(),
        poll_id=poll,
        choice="excellent",
        voter_id=voter_id,
        day=received_at.astimezone(CST).date(),
        received_at=received_at,
        decided_at=received_at + timedelta(milliseconds=30),
    )


def random_phone() -> str:
    return f"13{random.randint(3, 9)}{random.randint(0, 99_999_999):08d}"


def day(n: int) -> datetime:
    """Noon on the n-th day of voting (day 0 is the opening day)."""
    return datetime(2021, 12, 20, 12, 0, tzinfo=CST) + timedelta(days=n)


def new_topology() -> Topology:
    return Topology(
        schema=unique_name("lottery_t"),
        group=unique_name("lottery_t_g"),
        accepted_topic=unique_name("t_accepted"),
        submitted_topic=unique_name("t_submitted"),
        deadletter_topic=unique_name("t_deadletter"),
        decider_group=unique_name("t_antifraud"),
    )


async def start(
    stack: AsyncExitStack, settings: LotterySettings, topology: Topology, clock: Clock
) -> httpx.AsyncClient:
    app = create_app(settings, clock=clock, topology=topology)
    await stack.enter_async_context(app.router.lifespan_context(app))
    transport = httpx.ASGITransport(app=app)
    return await stack.enter_async_context(
        httpx.AsyncClient(transport=transport, base_url="http://lottery.test")
    )


@pytest.fixture(scope="module")
def raw_logs() -> Iterator[RawRecords]:
    handler = RawRecords()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(scope="module")
async def lottery(
    kafka_bootstrap: str,
    database_url: str,
    voter_token_secret: str,
    staff_token: str,
    tmp_path_factory: pytest.TempPathFactory,
    raw_logs: RawRecords,
) -> AsyncIterator[Lottery]:
    catalog = tmp_path_factory.mktemp("lottery") / "polls.yaml"
    catalog.write_text(catalog_yaml(), encoding="utf-8")
    topology = new_topology()
    await create_topics(
        kafka_bootstrap,
        topology.accepted_topic,
        topology.submitted_topic,
        topology.deadletter_topic,
    )
    settings = LotterySettings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        polls_file=catalog,
        pii_key=base64.b64encode(os.urandom(32)).decode(),
        voter_token_secret=voter_token_secret,
        staff_tokens=f"tester={hashlib.sha256(staff_token.encode()).hexdigest()}",
        lottery_refresh_seconds=1.0,
    )
    clock = Clock(DURING)
    pool = await create_pool(database_url, "public")
    try:
        async with AsyncExitStack() as stack:
            client = await start(stack, settings, topology, clock)
            service = Lottery(
                client=client,
                clock=clock,
                topology=topology,
                settings=settings,
                bootstrap=kafka_bootstrap,
                pool=await create_pool(database_url, topology.schema),
                tokens=VoterTokens(voter_token_secret),
                staff={"Authorization": f"Bearer {staff_token}"},
            )
            stack.push_async_callback(service.pool.close)

            async def keep_public(response: httpx.Response) -> None:
                if not response.request.url.path.endswith("winners.csv"):
                    await response.aread()
                    service.public.append(response.text)

            client.event_hooks["response"].append(keep_public)
            yield service
    finally:
        # Dropped even when start-up failed half way, after migrating the schema.
        await pool.execute(f"DROP SCHEMA IF EXISTS {topology.schema} CASCADE")
        await pool.close()


@pytest.fixture
def during(lottery: Lottery) -> Iterator[Lottery]:
    lottery.clock.at = DURING
    yield lottery


async def test_a_vote_at_0859_59_999_counts_and_one_at_0900_does_not(during: Lottery) -> None:
    lottery = during
    last_ms = CLOSES - timedelta(milliseconds=1)
    early, early_headers = lottery.voter()
    late, late_headers = lottery.voter()
    await lottery.enter("days", early_headers, random_phone(), "早")
    await lottery.enter("days", late_headers, random_phone(), "晚")
    await lottery.votes("days", early, day(17), last_ms)
    await lottery.votes("days", late, day(17), CLOSES, CLOSES + timedelta(hours=3))

    await lottery.wait_days("days", early_headers, 2)
    await lottery.wait_drained()
    assert await lottery.days("days", late_headers) == 1
    rows = await lottery.pool.fetch(
        "SELECT voter_id, day FROM voter_days WHERE poll_id = 'days' ORDER BY voter_id, day"
    )
    closing_day = date(2022, 1, 8)
    assert (early, closing_day) in {(r["voter_id"], r["day"]) for r in rows}
    assert (late, closing_day) not in {(r["voter_id"], r["day"]) for r in rows}


async def test_a_number_from_two_voter_ids_has_the_union_of_their_days(during: Lottery) -> None:
    lottery = during
    phone = random_phone()
    first, first_headers = lottery.voter()
    second, second_headers = lottery.voter()
    made = await lottery.enter("union", first_headers, phone, "王五")
    again = await lottery.enter("union", second_headers, f"+86 {phone[:3]}-{phone[3:]}", "王五")
    assert made["entry_id"] == again["entry_id"]
    await lottery.votes("union", first, day(1), day(2), day(2) + timedelta(hours=1))
    await lottery.votes("union", second, day(2), day(3))

    await lottery.wait_days("union", first_headers, 3)
    assert await lottery.days("union", second_headers) == 3

    # The second voter id moves to another number: its days go with its link.
    moved = await lottery.enter("union", second_headers, random_phone(), "王五")
    assert moved["entry_id"] != made["entry_id"]
    assert await lottery.days("union", first_headers) == 2
    assert await lottery.days("union", second_headers) == 2


async def test_an_entry_says_the_latest_day_it_counts(during: Lottery) -> None:
    lottery = during
    voter, headers = lottery.voter()
    await lottery.enter("union", headers, random_phone(), "孙七")
    fresh = await lottery.entry("union", headers)
    assert fresh is not None
    assert (fresh["days"], fresh["last_day"]) == (0, None)

    await lottery.votes("union", voter, day(4), day(2))  # the later day arrives first
    await lottery.wait_days("union", headers, 2)
    counted = await lottery.entry("union", headers)
    assert counted is not None
    assert counted["last_day"] == "2021-12-24"


async def test_entries_answer_201_then_200_and_refuse_bad_input(during: Lottery) -> None:
    lottery = during
    _, headers = lottery.voter()
    url = "/api/v1/polls/gate/lottery/entry"
    phone = random_phone()
    first = await lottery.client.post(url, json={"name": "李四", "phone": phone}, headers=headers)
    second = await lottery.client.post(url, json={"name": "李四", "phone": phone}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == {"entry_id": first.json()["entry_id"], "phone_masked": mask_phone(phone)}

    cases = {
        "invalid_phone": {"name": "李四", "phone": "12345"},
        "invalid_name": {"name": "  ", "phone": phone},
        "invalid_body": {"name": "李四", "phone": phone, "email": "x@example.org"},
    }
    for code, body in cases.items():
        response = await lottery.client.post(url, json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (422, code)

    no_token = await lottery.client.post(url, json={"name": "李四", "phone": phone})
    assert no_token.status_code == 401
    for path, code in (("nolot", "no_lottery"), ("nosuch", "unknown_poll")):
        response = await lottery.client.get(f"/api/v1/polls/{path}/lottery")
        assert (response.status_code, response.json()["code"]) == (404, code)
    before = await lottery.client.post(
        "/api/v1/polls/later/lottery/entry", json={"name": "李四", "phone": phone}, headers=headers
    )
    assert (before.status_code, before.json()["code"]) == (403, "poll_not_open")
    lottery.clock.at = OWN_CLOSES["gate"]
    closed = await lottery.client.post(url, json={"name": "李四", "phone": phone}, headers=headers)
    assert (closed.status_code, closed.json()["code"]) == (403, "poll_closed")


async def test_the_commitment_is_fixed_once_and_every_replica_shows_it(
    during: Lottery,
) -> None:
    lottery = during
    upcoming = (await lottery.client.get("/api/v1/polls/later/lottery")).json()
    assert upcoming["commitment"] is None
    first = (await lottery.client.get("/api/v1/polls/gate/lottery")).json()
    assert len(first["commitment"]) == 64

    # A second replica on the same database (its own consumer group and topic).
    replica_topology = Topology(
        schema=lottery.topology.schema,
        group=unique_name("lottery_t_g"),
        accepted_topic=unique_name("t_accepted"),
    )
    await create_topics(lottery.bootstrap, replica_topology.accepted_topic)
    async with AsyncExitStack() as stack:
        replica = await start(stack, lottery.settings, replica_topology, lottery.clock)
        again = (await replica.get("/api/v1/polls/gate/lottery")).json()
    assert again["commitment"] == first["commitment"]


async def test_staff_calls_need_a_valid_staff_token(during: Lottery) -> None:
    lottery = during
    calls = [
        ("POST", "/api/v1/polls/gate/lottery/draw"),
        ("GET", "/api/v1/polls/gate/lottery/winners.csv"),
        ("GET", "/staff/api/polls"),
    ]
    for method, path in calls:
        anonymous = await lottery.client.request(method, path)
        wrong = await lottery.client.request(
            method, path, headers={"Authorization": "Bearer not-the-staff-token"}
        )
        assert (anonymous.status_code, wrong.status_code) == (401, 403), path
    page = await lottery.client.get("/staff/")
    assert page.status_code == 200
    assert "staff.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_the_draw_waits_for_the_close_and_for_the_pipeline(during: Lottery) -> None:
    lottery = during
    url = "/api/v1/polls/gate/lottery/draw"

    open_ = await lottery.client.post(url, headers=lottery.staff)
    assert (open_.status_code, open_.json()["code"]) == (409, "poll_open")
    lottery.clock.at = OWN_CLOSES["gate"] + timedelta(seconds=2)
    settling = await lottery.client.post(url, headers=lottery.staff)
    assert (settling.status_code, settling.json()["code"]) == (409, "poll_settling")

    # A vote from before the close still waiting for antifraud: the draw must wait for it.
    await lottery.wait_drained()
    await produce(lottery.bootstrap, lottery.topology.submitted_topic, [(b"v-x", b"{}")])
    lottery.clock.at = OWN_CLOSES["gate"] + timedelta(minutes=1)
    busy = await lottery.client.post(url, headers=lottery.staff)
    assert (busy.status_code, busy.json()["code"]) == (409, "pipeline_not_drained")
    topo = lottery.topology
    assert busy.json()["left"] == {
        f"{topo.decider_group}/{topo.submitted_topic}": 1,
        f"{topo.group}/{topo.accepted_topic}": 0,
    }
    await decide_everything(lottery.bootstrap, topo.decider_group, topo.submitted_topic)
    done = await lottery.client.post(url, headers=lottery.staff)
    assert done.status_code == 201, done.text


async def test_votes_for_other_polls_after_the_close_do_not_hold_back_the_draw(
    during: Lottery,
) -> None:
    lottery = during
    topo = lottery.topology
    url = "/api/v1/polls/busy/lottery/draw"
    await lottery.wait_drained()

    # A vote from before the close is still undecided: refused, as it must be, and the
    # lottery's draw-readiness gauge counts it.
    await produce(lottery.bootstrap, topo.submitted_topic, [(b"v-before", b"{}")])
    lottery.clock.at = OWN_CLOSES["busy"] + timedelta(minutes=1)
    waiting = await lottery.client.post(url, headers=lottery.staff)
    assert (waiting.status_code, waiting.json()["code"]) == (409, "pipeline_not_drained")
    await eventually(lambda: votes_left_shows(lottery, "busy", 1.0), what="the gauge at 1")

    # Antifraud decides it; meanwhile another poll's votes keep arriving, undecided.
    await decide_everything(lottery.bootstrap, topo.decider_group, topo.submitted_topic)
    await produce(lottery.bootstrap, topo.submitted_topic, [(b"v-elsewhere", b"{}")])
    try:
        drawn = await lottery.client.post(url, headers=lottery.staff)
        assert drawn.status_code == 201, drawn.text
        # Drawn: the poll no longer awaits its draw, and its series goes.
        await eventually(lambda: votes_left_shows(lottery, "busy", None), what="no series")
    finally:
        # The other poll's vote is decided too, for the tests that follow.
        await decide_everything(lottery.bootstrap, topo.decider_group, topo.submitted_topic)


async def votes_left_shows(lottery: Lottery, poll: str, value: float | None) -> bool:
    """Whether the lottery's /metrics has lottery_draw_votes_left for `poll` at `value`
    (None: no such series)."""
    page = (await lottery.client.get("/metrics")).text
    found = re.search(rf'^lottery_draw_votes_left{{poll="{poll}"}} (\S+)$', page, re.MULTILINE)
    return (float(found.group(1)) if found else None) == value


async def decide_everything(bootstrap: str, group: str, topic: str) -> None:
    """Stand in for antifraud: read the topic to its end and commit, as a group."""
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        seen = 0
        while seen == 0:
            batch = await reader.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batch.values())
        await reader.commit()
    finally:
        await reader.stop()


async def populate(lottery: Lottery, poll: str, n: int) -> dict[str, str]:
    """n entries with 0-4 days each; returns phone by entry_id."""
    phones = {}
    for i in range(n):
        voter_id, headers = lottery.voter()
        phone = random_phone()
        made = await lottery.enter(poll, headers, phone, f"测试者{i}")
        phones[made["entry_id"]] = phone
        await lottery.votes(poll, voter_id, *(day(d) for d in range(i % 5)))
    return phones


async def test_two_staff_drawing_at_once_get_one_draw(during: Lottery) -> None:
    lottery = during
    phones = await populate(lottery, "race", 8)
    lottery.clock.at = AFTER
    await lottery.wait_drained()

    url = "/api/v1/polls/race/lottery/draw"
    answers = await asyncio.gather(
        *(lottery.client.post(url, headers=lottery.staff) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [200] * 5 + [201]
    assert len({a.content for a in answers}) == 1
    later = await lottery.client.post(
        url, headers=lottery.staff, json={"external_entropy": "another try"}
    )
    assert (later.status_code, later.content) == (200, answers[0].content)
    assert await lottery.pool.fetchval("SELECT count(*) FROM draws WHERE poll_id = 'race'") == 1

    record = answers[0].json()
    assert len(record["winners"]) == 2 and len(record["reserves"]) == 1
    weights = {e["entry_id"]: e["weight"] for e in record["entries"]}
    assert set(weights) <= set(phones) and 0 not in weights.values()
    assert len(weights) == 6  # 8 entries, two of them voted on no day


async def test_a_draw_end_to_end_leaks_no_phone_number(
    during: Lottery, raw_logs: RawRecords
) -> None:
    lottery = during
    phones = await populate(lottery, "flow", 6)
    state = (await lottery.client.get("/api/v1/polls/flow/lottery")).json()
    assert (state["state"], state["entries"], state["winners"]) == ("open", 6, [])
    not_yet = await lottery.client.get("/api/v1/polls/flow/lottery/audit")
    assert (not_yet.status_code, not_yet.json()["code"]) == (404, "not_drawn")

    lottery.clock.at = AFTER
    await lottery.wait_drained()
    assert (await lottery.client.get("/api/v1/polls/flow/lottery")).json()["state"] == (
        "awaiting_draw"
    )
    drawn = await lottery.client.post(
        "/api/v1/polls/flow/lottery/draw",
        headers=lottery.staff,
        json={"external_entropy": "深证成指 2022-01-10 收盘 14012.34"},
    )
    assert drawn.status_code == 201, drawn.text
    record = drawn.json()
    public = (await lottery.client.get("/api/v1/polls/flow/lottery")).json()
    assert public["state"] == "drawn"
    assert public["commitment"] == record["commitment"]
    assert [w["entry_id"] for w in public["winners"]] == record["winners"]
    assert [w["phone_masked"] for w in public["winners"]] == [
        mask_phone(phones[w]) for w in record["winners"]
    ]
    audit = await lottery.client.get("/api/v1/polls/flow/lottery/audit")
    assert audit.content == drawn.content

    csv_response = await lottery.client.get(
        "/api/v1/polls/flow/lottery/winners.csv", headers=lottery.staff
    )
    assert csv_response.status_code == 200
    lines = csv_response.text.lstrip("\ufeff").splitlines()
    assert lines[0] == "rank,role,entry_id,name,phone"
    assert lines[1].startswith(f"1,winner,{record['winners'][0]},")
    assert lines[1].endswith(phones[record["winners"][0]])
    assert len(lines) == 1 + len(record["winners"]) + len(record["reserves"])

    console = await lottery.client.get("/staff/api/polls", headers=lottery.staff)
    flow = next(p for p in console.json()["polls"] if p["poll_id"] == "flow")
    assert flow["days_histogram"] == {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1}
    assert flow["drawn_by"] == "tester"
    # For the console's count, read from tally: the options in order and who may see it.
    assert (flow["options"], flow["results"]) == (["excellent", "good", "fair", "poor"], "live")
    assert (flow["lottery"], flow["state"], flow["voting_state"]) == (True, "drawn", "closed")
    # A poll without a prize draw is listed too, for its count and its page.
    plain = {p["poll_id"]: p for p in console.json()["polls"] if not p["lottery"]}
    assert plain == {
        "nolot": {
            "poll_id": "nolot",
            "lottery": False,
            "state": "closed",
            "title": "No prize draw",
            "opens_at": "2021-12-20T01:00:00.000000Z",
            "closes_at": "2022-01-08T01:00:00.000000Z",
            "timezone": "Asia/Shanghai",
            "options": ["excellent", "good"],
            "results": "live",
            "translations": {},
        }
    }

    audited = await lottery.pool.fetch(
        "SELECT staff, action, outcome FROM staff_audit WHERE poll_id = 'flow' ORDER BY id"
    )
    assert [(r["staff"], r["action"], r["outcome"]) for r in audited] == [
        ("tester", "draw", "drawn"),
        ("tester", "winners_csv", "exported 3 rows"),
    ]
    assert any("staff call" in line and "'action': 'draw'" in line for line in raw_logs.lines)
    leaks = [p for p in phones.values() for text in lottery.public + raw_logs.lines if p in text]
    assert leaks == []
    sealed = await lottery.pool.fetch(
        "SELECT name_sealed, phone_sealed FROM entries WHERE poll_id = 'flow'"
    )
    stored = b"".join(r["name_sealed"] + r["phone_sealed"] for r in sealed)
    assert len(sealed) == 6
    assert not any(p.encode() in stored or b"\xe6\xb5\x8b" in stored for p in phones.values())


async def test_once_prizes_are_delivered_staff_erase_every_entrant_s_details(
    during: Lottery, raw_logs: RawRecords
) -> None:
    lottery = during
    url = "/staff/api/polls/erase/erase"
    phones = await populate(lottery, "erase", 5)
    names = [f"测试者{i}" for i in range(5)]
    _, headers = lottery.voter()
    mine = await lottery.enter("erase", headers, next(iter(phones.values())), "本人")
    lottery.clock.at = AFTER
    await lottery.wait_drained()
    early = await lottery.client.post(url, headers=lottery.staff, json={"confirm": "erase"})
    assert (early.status_code, early.json()["code"]) == (409, "not_drawn")
    drawn = await lottery.client.post("/api/v1/polls/erase/lottery/draw", headers=lottery.staff)
    assert drawn.status_code == 201
    public_before = (await lottery.client.get("/api/v1/polls/erase/lottery")).content
    csv_before = await lottery.client.get(
        "/api/v1/polls/erase/lottery/winners.csv", headers=lottery.staff
    )
    assert csv_before.status_code == 200

    unsigned = await lottery.client.post(url, json={"confirm": "erase"})
    assert unsigned.status_code == 401
    mistyped = await lottery.client.post(url, headers=lottery.staff, json={"confirm": "eras"})
    assert (mistyped.status_code, mistyped.json()["code"]) == (422, "confirm_mismatch")
    lottery.clock.at = AFTER + timedelta(days=10)
    erased = await lottery.client.post(url, headers=lottery.staff, json={"confirm": "erase"})
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "poll_id": "erase",
        "details_erased_at": "2022-01-18T01:01:00.000000Z",
        "details_erased_by": "tester",
        "entries": 5,
    }
    again = await lottery.client.post(url, headers=lottery.staff, json={"confirm": "erase"})
    assert (again.status_code, again.json()) == (200, erased.json())

    # Nothing a full name or number could be read from is left; what was public stays.
    sealed = await lottery.pool.fetch(
        "SELECT entry_id, name_sealed, phone_sealed FROM entries WHERE poll_id = 'erase'"
    )
    cipher = parse_keyring(lottery.settings.pii_key.get_secret_value())
    opened = [
        cipher.decrypt(r[field], aad=entry_aad("erase", r["entry_id"], kind))
        for r in sealed
        for field, kind in (("name_sealed", "name"), ("phone_sealed", "phone"))
    ]
    assert len(opened) == 10
    assert not set(opened) & {*phones.values(), *names, "本人"}
    assert set(opened) >= {mask_phone(p) for p in phones.values()}
    assert (await lottery.client.get("/api/v1/polls/erase/lottery")).content == public_before
    audit = await lottery.client.get("/api/v1/polls/erase/lottery/audit")
    assert audit.content == drawn.content
    own = await lottery.client.get("/api/v1/polls/erase/lottery/entry", headers=headers)
    assert own.json()["entry_id"] == mine["entry_id"]
    assert (own.json()["phone_masked"], own.json()["name_masked"]) == (
        mine["phone_masked"],
        "本*",
    )
    gone = await lottery.client.get(
        "/api/v1/polls/erase/lottery/winners.csv", headers=lottery.staff
    )
    assert (gone.status_code, gone.json()["code"]) == (410, "details_erased")
    console = await lottery.client.get("/staff/api/polls", headers=lottery.staff)
    card = next(p for p in console.json()["polls"] if p["poll_id"] == "erase")
    assert (card["details_erased_at"], card["details_erased_by"]) == (
        "2022-01-18T01:01:00.000000Z",
        "tester",
    )
    audited = await lottery.pool.fetch(
        "SELECT action, outcome FROM staff_audit WHERE poll_id = 'erase' ORDER BY id"
    )
    assert [(r["action"], r["outcome"]) for r in audited if r["action"] != "console"] == [
        ("erase_details", "not_drawn"),
        ("draw", "drawn"),
        ("winners_csv", "exported 3 rows"),
        ("erase_details", "confirm_mismatch"),
        ("erase_details", "erased 5 entries"),
        ("erase_details", "already_erased"),
        ("winners_csv", "details_erased"),
    ]
    leaks = [p for p in phones.values() for line in raw_logs.lines if p in line]
    assert leaks == []


async def test_the_verifier_passes_the_audit_record_and_fails_a_tampered_one(
    during: Lottery, tmp_path: Path
) -> None:
    lottery = during
    await populate(lottery, "verify", 7)
    lottery.clock.at = AFTER
    await lottery.wait_drained()
    drawn = await lottery.client.post("/api/v1/polls/verify/lottery/draw", headers=lottery.staff)
    assert drawn.status_code == 201, drawn.text
    audit = await lottery.client.get("/api/v1/polls/verify/lottery/audit")
    record = audit.json()
    assert record["commitment"] == hashlib.sha256(bytes.fromhex(record["seed"])).hexdigest()

    genuine = tmp_path / "audit.json"
    genuine.write_bytes(audit.content)
    ok = verify(genuine)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("OK verify")

    tampered = dict(record)
    heaviest = max(record["entries"], key=lambda e: e["weight"])
    tampered["entries"] = [
        {**e, "weight": e["weight"] + 3} if e is heaviest else e for e in record["entries"]
    ]
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(tampered), encoding="utf-8")
    bad = verify(forged)
    assert bad.returncode == 1
    assert "DIFFERS entries_digest" in bad.stdout


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return run_module("services.lottery.verify", str(path))
