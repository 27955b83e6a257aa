"""The campaign a replay plays: who votes on which days, how, and what antifraud must say.

Pure: no I/O and no clock. Everything comes from a seeded `random.Random`, so one seed
gives one campaign (voter ids aside, which the caller mints). The campaign is the one of
ORIGIN.md: 2021-12-20 09:00 to 2022-01-08 09:00, China Standard Time, one vote per
person per day, thirty prizes weighted by days voted.

Habits (shares of the voters; most people vote once or twice):

    once     one day, mostly the announcement day or a reminder day
    twice    two days
    few      three to six days
    daily    every day from the day they found the poll, missing one now and then, at
             their own routine hour: "vote every day, your chance is higher"

Honest mistakes, each with the answer antifraud must give:

    typo       a wrong captcha answer, retried a little later         captcha_wrong, accepted
    slow       the page left open past the captcha's five minutes     captcha_expired, accepted
    again      a second vote later the same day                       daily_limit

Fraud, which antifraud must refuse:

    burst      a script behind one address sends more votes in a minute than the address
               may (each from a fresh device id, captchas guessed): the first `per_ip`
               are captcha_wrong, the rest rate_limited_ip. Votes from different device
               ids land on different partitions and may be judged in any order, so the
               split is checked as counts, which the symmetric rate window makes exact
    hammer     one device id scripted to vote 30 times in 25 s with solved captchas: one
               accepted, the next `per_voter - 1` daily_limit, the rest rate_limited_voter
    replayed   a captured vote request sent again (same device, same captcha) within the
               captcha's life                                         captcha_reused

A few people vote from two devices and register the same number from both: antifraud
cannot link the devices, so both devices' votes are accepted, but the entry's weight is
the number of distinct days, not of votes. A few register and never vote (weight 0).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Final, Literal

CST: Final = timezone(timedelta(hours=8), "CST")
CAMPAIGN_OPENS: Final = datetime(2021, 12, 20, 9, 0, tzinfo=CST)
CAMPAIGN_CLOSES: Final = datetime(2022, 1, 8, 9, 0, tzinfo=CST)
CAMPAIGN_DAYS: Final = tuple(
    CAMPAIGN_OPENS.date() + timedelta(days=n)
    for n in range((CAMPAIGN_CLOSES.date() - CAMPAIGN_OPENS.date()).days + 1)
)
# A day on which the organiser's account pushed the article again (ORIGIN.md: voters
# came from a QR code in a WeChat article): the announcement, two reminders, "closes
# tomorrow morning".
PUSH_DAYS: Final = {
    date(2021, 12, 20): 6.0,
    date(2021, 12, 27): 2.5,
    date(2022, 1, 4): 2.0,
    date(2022, 1, 7): 2.5,
}
# A phone audience: commute, lunch and the evening; little at night.
HOUR_WEIGHTS: Final = (
    0.3, 0.15, 0.1, 0.05, 0.05, 0.1, 0.4, 1.0, 1.6, 1.4, 1.2, 1.3,
    2.2, 1.8, 1.1, 1.0, 1.0, 1.3, 1.5, 1.9, 2.4, 2.6, 2.0, 1.0,
)  # fmt: skip
CHOICES: Final = ("excellent", "good", "fair", "poor")
CHOICE_WEIGHTS: Final = (0.70, 0.20, 0.07, 0.03)

Habit = Literal["once", "twice", "few", "daily"]
HABITS: Final[dict[Habit, float]] = {"once": 0.55, "twice": 0.25, "few": 0.12, "daily": 0.08}
ENTRY_SHARE: Final[dict[Habit, float]] = {"once": 0.2, "twice": 0.35, "few": 0.5, "daily": 0.85}
TWO_DEVICES: Final = 0.05  # of entrants
TYPO: Final = 0.04  # of honest votes
SLOW: Final = 0.015
AGAIN: Final = 0.02
REPLAYED: Final = 0.004
PHONE_TYPO: Final = 0.02  # of entry forms, corrected on the second try

WECHAT_UA: Final = (
    "Mozilla/5.0 (Linux; Android 11; M2012K11AC) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/86.0.4240.99 XWEB/3179 MMWEBSDK/20211001 Mobile Safari/537.36 "
    "MMWEBID/1234 MicroMessenger/8.0.16.2040(0x28001037) WeChat/arm64 NetType/4G"
)
IPHONE_UA: Final = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 15_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.16(0x18001041) NetType/WIFI"
)
DESKTOP_UA: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/96.0.4664.110 Safari/537.36"
)
SCRIPT_UA: Final = "python-requests/2.26.0"
BURST_ADDRESS: Final = "198.51.100.7"  # documentation range: the one scripted source
HAMMER_ADDRESS: Final = "203.0.113.9"

SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许邓冯韩曹曾彭萧蔡潘田董袁"
GIVEN: Final = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红建文辉力婷雪琳晨宇浩然思雨欣怡子轩梓涵"
)
PREFIXES: Final = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
    "155", "156", "157", "158", "159", "166", "170", "176", "177", "180", "181", "182",
    "183", "185", "186", "187", "188", "189", "191", "198", "199",
)  # fmt: skip

Expected = str  # "accepted" or a rejection reason of contract section 6
ACCEPTED: Final = "accepted"


@dataclass(frozen=True)
class RateLimits:
    """The campaign poll's limits, which size the fraud so that it trips them."""

    window_seconds: int
    per_voter: int
    per_ip: int


@dataclass
class Voter:
    index: int
    voter_id: str
    habit: Habit | Literal["script"]
    address: str
    user_agent: str
    person: int  # devices of one person share this (the entrant), else the voter index


@dataclass
class PlannedVote:
    """One vote request as the edge would have received it, and the verdict it must get.

    `expected` is None for burst votes, whose reasons are checked as counts. `live` votes
    are not pre-stamped: they are sent through the gateway during the rehearsal's own
    closing minutes.
    """

    vote_id: str
    voter: int
    received_at: datetime
    captcha_issued_at: datetime
    answer: Literal["right", "wrong"]
    reuse_of: str | None  # the vote whose captcha id this request carries again
    choice: str
    kind: str
    expected: Expected | None
    live: bool = False


@dataclass(frozen=True)
class EntryForm:
    """One POST of the entry form; `typo` forms are expected to be refused (422)."""

    voter: int
    person: int
    name: str
    phone: str  # as typed: spaces, dashes, +86 ...
    typo: bool

    def __repr__(self) -> str:
        return f"EntryForm(voter={self.voter}, person={self.person}, typo={self.typo})"


@dataclass
class Campaign:
    voters: list[Voter]
    votes: list[PlannedVote]  # in received_at order
    forms: list[EntryForm]
    burst_expected: Counter[str]
    live_day: date  # stands for the day the live votes are received on

    @property
    def stamped(self) -> list[PlannedVote]:
        return [v for v in self.votes if not v.live]

    @property
    def live(self) -> list[PlannedVote]:
        return [v for v in self.votes if v.live]

    def expected_weights(self) -> Counter[int]:
        """Entries by the days they must count: the eligible ones' weights (contract 8)."""
        days: dict[int, set[date]] = {}
        for form in self.forms:
            if not form.typo:
                days.setdefault(form.person, set())
        for vote in self.votes:
            person = self.voters[vote.voter].person
            if vote.expected == ACCEPTED and person in days:
                day = self.live_day if vote.live else vote.received_at.astimezone(CST).date()
                days[person].add(day)
        return Counter(len(d) for d in days.values())

    def fraud(self) -> list[PlannedVote]:
        return [v for v in self.votes if v.kind in ("burst", "hammer", "replayed")]


def _day_weight(day: date) -> float:
    start = CAMPAIGN_DAYS[0]
    decay = 1.0 + 1.5 * 0.6 ** (day - start).days
    weekend = 0.7 if day.weekday() >= 5 else 1.0
    return decay * weekend * PUSH_DAYS.get(day, 1.0)


class _Planner:
    def __init__(
        self, rng: random.Random, limits: RateLimits, mint: Callable[[], str], live_day: date
    ) -> None:
        self.rng = rng
        self.limits = limits
        self.mint = mint
        self.live_day = live_day
        self.voters: list[Voter] = []
        self.votes: list[PlannedVote] = []
        self.nat_pool = [
            f"100.{64 + n // 250}.{n % 250}.{rng.randrange(1, 255)}" for n in range(60)
        ]

    # ---- people

    def voter(self, habit: Habit | Literal["script"], person: int | None = None) -> Voter:
        rng = self.rng
        if rng.random() < 0.7:  # mobile data behind carrier NAT, shared with others
            address = rng.choice(self.nat_pool)
        else:  # home broadband of its own
            address = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        agent = rng.choices((WECHAT_UA, IPHONE_UA, DESKTOP_UA), (0.6, 0.3, 0.1))[0]
        index = len(self.voters)
        made = Voter(index, self.mint(), habit, address, agent, index if person is None else person)
        self.voters.append(made)
        return made

    def days_for(self, habit: Habit) -> list[date]:
        rng = self.rng
        weights = [_day_weight(d) for d in CAMPAIGN_DAYS]
        if habit == "daily":  # the keen ones found it early
            first = rng.choices(range(6), weights[:6])[0]
            return [
                d for d in CAMPAIGN_DAYS[first:] if d == CAMPAIGN_DAYS[first] or rng.random() > 0.08
            ]
        first = rng.choices(range(len(CAMPAIGN_DAYS)), weights)[0]
        wanted = {"once": 1, "twice": 2, "few": rng.randint(3, 6)}[habit]
        later = list(range(first + 1, len(CAMPAIGN_DAYS)))
        picked = {first}
        while len(picked) < wanted and later:
            pick = rng.choices(later, [weights[i] for i in later])[0]
            later.remove(pick)
            picked.add(pick)
        return [CAMPAIGN_DAYS[i] for i in sorted(picked)]

    def instant(self, day: date, routine: int | None) -> datetime:
        """A moment of `day` a person would vote at, inside the campaign's hours."""
        rng = self.rng
        hours = list(range(24))
        if day == CAMPAIGN_DAYS[0]:
            hours = hours[9:]
        elif day == CAMPAIGN_DAYS[-1]:
            hours = hours[:9]
        if routine is not None and routine in hours and rng.random() < 0.8:
            hour = routine
        else:
            hour = rng.choices(hours, [HOUR_WEIGHTS[h] for h in hours])[0]
        # Away from the edges of the hour: a retry minutes later stays in the same day,
        # and the first day's votes come after 09:00.
        second = rng.uniform(120, 3300)
        return datetime.combine(day, time(hour), CST) + timedelta(seconds=second)

    # ---- votes

    def add(
        self,
        voter: Voter,
        at: datetime,
        kind: str,
        expected: Expected | None,
        *,
        think: float | None = None,
        answer: Literal["right", "wrong"] = "right",
        reuse_of: PlannedVote | None = None,
        choice: str | None = None,
    ) -> PlannedVote:
        rng = self.rng
        seconds = rng.uniform(6, 50) if think is None else think
        vote = PlannedVote(
            vote_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            voter=voter.index,
            received_at=at,
            captcha_issued_at=reuse_of.captcha_issued_at
            if reuse_of
            else at - timedelta(seconds=seconds),
            answer=answer,
            reuse_of=reuse_of.vote_id if reuse_of else None,
            choice=choice or rng.choices(CHOICES, CHOICE_WEIGHTS)[0],
            kind=kind,
            expected=expected,
        )
        self.votes.append(vote)
        return vote

    def honest_day(self, voter: Voter, day: date, routine: int | None) -> None:
        """One person's vote of the day, with the mistakes people make."""
        rng = self.rng
        at = self.instant(day, routine)
        roll = rng.random()
        if roll < TYPO:
            self.add(voter, at, "typo", "captcha_wrong", answer="wrong")
            at += timedelta(seconds=rng.uniform(8, 40))
        elif roll < TYPO + SLOW:
            self.add(voter, at, "slow", "captcha_expired", think=rng.uniform(330, 600))
            at += timedelta(seconds=rng.uniform(20, 60))
        first = self.add(voter, at, "honest", ACCEPTED)
        if rng.random() < REPLAYED:
            for gap in sorted(rng.uniform(5, 200) for _ in range(3)):
                self.add(
                    voter, at + timedelta(seconds=gap), "replayed", "captcha_reused", reuse_of=first
                )
        closes = min(
            datetime.combine(day, time(23, 50), CST), CAMPAIGN_CLOSES - timedelta(minutes=2)
        )
        later = at + timedelta(hours=rng.uniform(0.5, 6))
        if rng.random() < AGAIN and later < closes:
            self.add(voter, later, "again", "daily_limit")

    def person(self, habit: Habit) -> list[Voter]:
        """Votes of one person over the campaign; returns their devices (one or two)."""
        rng = self.rng
        main = self.voter(habit)
        routine = rng.choices(range(24), HOUR_WEIGHTS)[0] if habit == "daily" else None
        devices = [main]
        enters = rng.random() < ENTRY_SHARE[habit]
        if enters and habit != "once" and rng.random() < TWO_DEVICES:
            devices.append(self.voter(habit, person=main.index))
        for day in self.days_for(habit):
            if len(devices) == 1 or rng.random() < 0.6:
                self.honest_day(devices[0], day, routine)
                if len(devices) > 1 and rng.random() < 0.25:  # both devices, same day
                    self.honest_day(devices[1], day, None)
            else:
                self.honest_day(devices[1], day, routine)
        return devices if enters else []

    def burst(self) -> Counter[str]:
        """More votes from one address within a rate window than it may send."""
        rng = self.rng
        size = self.limits.per_ip + max(25, self.limits.per_ip // 20)
        span = self.limits.window_seconds * 0.6
        start = self.instant(date(2021, 12, 28), 2)
        for n in range(size):
            bot = self.voter("script")
            bot.address, bot.user_agent = BURST_ADDRESS, SCRIPT_UA
            at = start + timedelta(seconds=span * n / size)
            self.add(bot, at, "burst", None, think=rng.uniform(0.5, 2), answer="wrong")
        return Counter(
            {"captcha_wrong": self.limits.per_ip, "rate_limited_ip": size - self.limits.per_ip}
        )

    def hammer(self, votes: int = 30) -> None:
        """One device scripted with solved captchas, as fast as the script goes."""
        bot = self.voter("script")
        bot.address, bot.user_agent = HAMMER_ADDRESS, SCRIPT_UA
        start = self.instant(date(2022, 1, 3), 23)
        spacing = (self.limits.window_seconds * 0.4) / votes
        for n in range(votes):
            if n == 0:
                expected = ACCEPTED
            elif n < self.limits.per_voter:
                expected = "daily_limit"
            else:
                expected = "rate_limited_voter"
            at = start + timedelta(seconds=n * spacing)
            self.add(bot, at, "hammer", expected, think=self.rng.uniform(1, 3), choice="poor")

    def mark_live(self, count: int) -> None:
        """Closing-morning votes of single-device people, to be sent live at the close."""
        last = CAMPAIGN_DAYS[-1]
        by_voter = Counter(v.voter for v in self.votes if v.received_at.date() == last)
        candidates = [
            v
            for v in self.votes
            if v.kind == "honest"
            and v.received_at.date() == last
            and by_voter[v.voter] == 1
            and self.voters[v.voter].person == v.voter
        ]
        for vote in self.rng.sample(candidates, min(count, len(candidates))):
            vote.live = True


def _phone(rng: random.Random) -> str:
    return rng.choice(PREFIXES) + "".join(str(rng.randrange(10)) for _ in range(8))


def _as_typed(rng: random.Random, phone: str) -> str:
    styles = (
        phone,
        f"{phone[:3]} {phone[3:7]} {phone[7:]}",
        f"{phone[:3]}-{phone[3:7]}-{phone[7:]}",
        f"+86 {phone}",
        f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}",
    )
    return rng.choices(styles, (0.6, 0.15, 0.1, 0.1, 0.05))[0]


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def _forms(rng: random.Random, entrants: Sequence[list[Voter]]) -> list[EntryForm]:
    forms: list[EntryForm] = []
    for devices in entrants:
        phone, name = _phone(rng), _name(rng)
        for device in devices:
            if rng.random() < PHONE_TYPO:
                typed = phone[:-1]  # a digit short: not a mobile number
                forms.append(EntryForm(device.index, device.person, name, typed, typo=True))
            forms.append(EntryForm(device.index, device.person, name, _as_typed(rng, phone), False))
    return forms


def plan_campaign(
    voters: int,
    *,
    seed: int,
    limits: RateLimits,
    mint: Callable[[], str],
    live_votes: int,
    live_day: date,
) -> Campaign:
    """The whole campaign for `voters` people; `mint` gives each device a voter id."""
    rng = random.Random(seed)  # noqa: S311 (a simulation, reproducible by its seed)
    planner = _Planner(rng, limits, mint, live_day)
    habits = list(HABITS)
    entrants: list[list[Voter]] = []
    for _ in range(voters):
        devices = planner.person(rng.choices(habits, [HABITS[h] for h in habits])[0])
        if devices:
            entrants.append(devices)
    for _ in range(max(2, voters // 200)):  # entered, then never voted
        entrants.append([planner.voter("once")])
    burst = planner.burst()
    planner.hammer()
    planner.mark_live(live_votes)
    planner.votes.sort(key=lambda v: v.received_at)
    return Campaign(
        voters=planner.voters,
        votes=planner.votes,
        forms=_forms(rng, entrants),
        burst_expected=burst,
        live_day=live_day,
    )
