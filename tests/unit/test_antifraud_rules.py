from __future__ import annotations

import bisect
import ipaddress
import itertools
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.antifraud import consumer, rules, store
from services.antifraud.rules import (
    DayKey,
    Decision,
    DecisionState,
    StateDelta,
    StateKeys,
    WindowKey,
    decide_batch,
    keys_for,
)
from shared import captcha
from shared.captcha import CaptchaVerdict
from shared.catalog import Catalog, Poll, RateLimits
from shared.events import RejectReason, VoteAccepted, VoteRejected, VoteSubmitted

SECRET = "antifraud-test-secret"
SHANGHAI = ZoneInfo("Asia/Shanghai")
OPENS = datetime(2021, 12, 20, 9, 0, tzinfo=SHANGHAI)
CLOSES = datetime(2022, 1, 8, 9, 0, tzinfo=SHANGHAI)
# 2021-12-26 00:00 in Shanghai: the voting day changes here.
MIDNIGHT = datetime(2021, 12, 25, 16, 0, tzinfo=UTC)
BATCHING = settings(max_examples=60, deadline=None)


def random_vote_id() -> str:
    return str(uuid.uuid4())


def random_voter_id() -> str:
    return f"voter-{uuid.uuid4().hex[:12]}"


def make_poll(**changes: object) -> Poll:
    fields: dict[str, object] = {
        "id": "futian-culture-2021",
        "title": "文化馆总分馆制建设",
        "options": ("excellent", "good", "fair", "poor"),
        "opens_at": OPENS,
        "closes_at": CLOSES,
        "timezone": "Asia/Shanghai",
        "daily_limit": 1,
    } | changes
    return Poll.model_validate(fields)


def catalog_of(*polls: Poll) -> Catalog:
    return Catalog(polls=polls)


def submit(
    poll: Poll,
    at: datetime,
    *,
    voter: str | None = None,
    ip: str = "198.51.100.10",
    choice: str = "excellent",
    captcha_id: str | None = None,
    answer: str | None = None,
) -> VoteSubmitted:
    captcha_id = captcha_id or captcha.issue(SECRET, at - timedelta(seconds=20))
    return VoteSubmitted(
        vote_id=random_vote_id(),
        poll_id=poll.id,
        choice=choice,
        voter_id=voter or random_voter_id(),
        captcha_id=captcha_id,
        captcha_answer=captcha.expected_answer(SECRET, captcha_id) if answer is None else answer,
        received_at=at,
        client_ip=ip,
    )


def decide(
    poll: Poll, votes: list[VoteSubmitted], state: DecisionState | None = None
) -> list[Decision]:
    return decide_batch(votes, catalog_of(poll), SECRET, state or DecisionState())


def reasons(decisions: list[Decision]) -> list[RejectReason | None]:
    return [d.reason for d in decisions]


def at_noon(day: int) -> datetime:
    return datetime(2021, 12, day, 12, 0, tzinfo=SHANGHAI)


# --- single rules -------------------------------------------------------------------


def test_unknown_poll_is_rejected() -> None:
    poll = make_poll()
    vote = submit(poll, at_noon(25)).model_copy(update={"poll_id": "no-such-poll"})
    assert rules.judge_poll(catalog_of(poll), "no-such-poll") is RejectReason.UNKNOWN_POLL
    assert rules.judge_poll(catalog_of(poll), poll.id) is None
    (decision,) = decide(poll, [vote])
    assert decision.reason is RejectReason.UNKNOWN_POLL
    assert decision.day is None


@pytest.mark.parametrize(
    ("received_at", "expected"),
    [
        (OPENS - timedelta(microseconds=1), RejectReason.POLL_NOT_OPEN),
        (OPENS, None),
        (datetime(2022, 1, 8, 8, 59, 59, 999_000, tzinfo=SHANGHAI), None),
        (CLOSES - timedelta(microseconds=1), None),
        (datetime.fromisoformat("2022-01-08T09:00:00+08:00"), RejectReason.POLL_CLOSED),
        (datetime(2022, 1, 8, 1, 0, tzinfo=UTC), RejectReason.POLL_CLOSED),
    ],
)
def test_voting_window_opens_inclusive_and_closes_exclusive(
    received_at: datetime, expected: RejectReason | None
) -> None:
    poll = make_poll()
    assert rules.judge_window(poll, received_at) is expected
    (decision,) = decide(poll, [submit(poll, received_at)])
    assert decision.reason is expected


def test_choice_must_be_one_of_the_poll_options() -> None:
    poll = make_poll()
    assert rules.judge_choice(poll, "good") is None
    (decision,) = decide(poll, [submit(poll, at_noon(25), choice="meh")])
    assert decision.reason is RejectReason.INVALID_CHOICE


@pytest.mark.parametrize(
    ("verdict", "reused", "expected"),
    [
        (CaptchaVerdict.OK, False, None),
        (CaptchaVerdict.OK, True, RejectReason.CAPTCHA_REUSED),
        (CaptchaVerdict.WRONG, False, RejectReason.CAPTCHA_WRONG),
        (CaptchaVerdict.WRONG, True, RejectReason.CAPTCHA_REUSED),
        (CaptchaVerdict.EXPIRED, False, RejectReason.CAPTCHA_EXPIRED),
        (CaptchaVerdict.EXPIRED, True, RejectReason.CAPTCHA_EXPIRED),
        (CaptchaVerdict.MALFORMED, False, RejectReason.CAPTCHA_MALFORMED),
        (CaptchaVerdict.MALFORMED, True, RejectReason.CAPTCHA_MALFORMED),
    ],
)
def test_captcha_verdicts_map_to_reasons(
    verdict: CaptchaVerdict, reused: bool, expected: RejectReason | None
) -> None:
    assert rules.judge_captcha(verdict, reused) is expected


def test_daily_limit_rule() -> None:
    assert rules.judge_daily_limit(0, 1) is None
    assert rules.judge_daily_limit(1, 1) is RejectReason.DAILY_LIMIT
    assert rules.judge_daily_limit(2, 3) is None


def test_rate_limit_rule_checks_voter_then_ip_then_subnet() -> None:
    limits = RateLimits(per_voter=2, per_ip=3, per_subnet=4)

    def judge(voter: int, ip: int, subnet: int, allowlisted: bool = False) -> str | None:
        return rules.judge_rate_limits(
            limits, by_voter=voter, by_ip=ip, by_subnet=subnet, allowlisted=allowlisted
        )

    assert judge(1, 2, 3) is None
    assert judge(2, 3, 4) == "rate_limited_voter"
    assert judge(0, 3, 4) == "rate_limited_ip"
    assert judge(0, 0, 4) == "rate_limited_subnet"
    assert judge(0, 99, 99, allowlisted=True) is None
    assert judge(2, 0, 0, allowlisted=True) == "rate_limited_voter"


def test_ipv4_mapped_address_matches_an_ipv4_allowlist() -> None:
    poll = make_poll(rate_limits=RateLimits(per_ip=1, allowlist=("10.0.0.0/8",)))
    votes = [submit(poll, at_noon(25), ip="::ffff:10.1.2.3") for _ in range(3)]
    assert all(d.accepted for d in decide(poll, votes))


@pytest.mark.parametrize(
    ("ip", "subnet"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_subnet_of(ip: str, subnet: str) -> None:
    assert rules.subnet_of(ip) == subnet


def test_address_of_counts_ipv4_mapped_as_ipv4() -> None:
    assert rules.address_of("::ffff:198.51.100.7") == "198.51.100.7"
    assert rules.address_of("2001:DB8::0001") == "2001:db8::1"


def test_window_reaches_the_same_span_either_side_exclusively() -> None:
    start = at_noon(25)
    times = [start, start + timedelta(seconds=30)]
    window = timedelta(seconds=60)
    assert rules.count_in_window(times, start + timedelta(seconds=60), window) == 1
    assert rules.count_in_window(times, start + timedelta(seconds=59.999999), window) == 2
    assert rules.count_in_window(times, start - timedelta(microseconds=1), window) == 2
    assert rules.count_in_window(times, start - timedelta(seconds=30), window) == 1
    assert rules.count_in_window(times, start - timedelta(seconds=60), window) == 0


# --- captcha in a batch ---------------------------------------------------------------


def test_wrong_answer_burns_the_captcha() -> None:
    poll = make_poll()
    at = at_noon(25)
    captcha_id = captcha.issue(SECRET, at)
    guesses = [
        submit(poll, at + timedelta(seconds=1), captcha_id=captcha_id, answer="XXXX"),
        submit(poll, at + timedelta(seconds=2), captcha_id=captcha_id),
    ]
    assert reasons(decide(poll, guesses)) == ["captcha_wrong", "captcha_reused"]


def test_each_captcha_counts_for_one_vote() -> None:
    poll = make_poll()
    at = at_noon(25)
    captcha_id = captcha.issue(SECRET, at)
    votes = [submit(poll, at + timedelta(seconds=s), captcha_id=captcha_id) for s in (1, 2, 3)]
    assert reasons(decide(poll, votes)) == [None, "captcha_reused", "captcha_reused"]


def test_captcha_reuse_is_remembered_across_batches() -> None:
    poll = make_poll()
    state = DecisionState()
    at = at_noon(25)
    captcha_id = captcha.issue(SECRET, at)
    decide(poll, [submit(poll, at + timedelta(seconds=1), captcha_id=captcha_id)], state)
    later = submit(poll, at + timedelta(seconds=2), captcha_id=captcha_id)
    assert reasons(decide(poll, [later], state)) == ["captcha_reused"]


def test_expired_and_malformed_captchas() -> None:
    poll = make_poll()
    at = at_noon(25)
    stale = captcha.issue(SECRET, at - captcha.DEFAULT_TTL)
    forged = captcha.issue("not-our-secret", at)
    votes = [
        submit(poll, at, captcha_id=stale),
        submit(
            poll, at, captcha_id=forged, answer=captcha.expected_answer("not-our-secret", forged)
        ),
        submit(poll, at, captcha_id="short", answer="ACEF"),
    ]
    assert reasons(decide(poll, votes)) == [
        "captcha_expired",
        "captcha_malformed",
        "captcha_malformed",
    ]


def test_captcha_received_just_before_expiry_counts() -> None:
    poll = make_poll()
    issued = at_noon(25)
    captcha_id = captcha.issue(SECRET, issued)
    just_in = submit(
        poll, issued + captcha.DEFAULT_TTL - timedelta(microseconds=1), captcha_id=captcha_id
    )
    assert reasons(decide(poll, [just_in])) == [None]


# --- daily limit and the voting day -----------------------------------------------------


def test_two_votes_of_one_voter_in_one_batch_see_each_other() -> None:
    poll = make_poll()
    voter = random_voter_id()
    votes = [submit(poll, at_noon(25) + timedelta(minutes=m), voter=voter) for m in (0, 5)]
    votes.append(submit(poll, at_noon(26), voter=voter))
    decisions = decide(poll, votes)
    assert reasons(decisions) == [None, "daily_limit", None]
    assert [d.day for d in decisions] == [
        date(2021, 12, 25),
        date(2021, 12, 25),
        date(2021, 12, 26),
    ]


def test_day_boundary_is_exact_at_16_utc_for_shanghai() -> None:
    poll = make_poll()
    voter = random_voter_id()
    last_instant = MIDNIGHT - timedelta(microseconds=1)
    votes = [
        submit(poll, MIDNIGHT - timedelta(hours=1), voter=voter),
        submit(poll, last_instant, voter=voter),
        submit(poll, MIDNIGHT, voter=voter),
    ]
    decisions = decide(poll, votes)
    assert reasons(decisions) == [None, "daily_limit", None]
    assert decisions[1].day == date(2021, 12, 25)
    assert decisions[2].day == date(2021, 12, 26)


@given(offset=st.integers(min_value=-86_400 * 10**6, max_value=86_400 * 10**6))
@settings(max_examples=200, deadline=None)
def test_decision_day_is_the_shanghai_date(offset: int) -> None:
    poll = make_poll()
    at = MIDNIGHT + timedelta(microseconds=offset)
    (decision,) = decide(poll, [submit(poll, at)])
    days_after_midnight = (at - MIDNIGHT) // timedelta(days=1)
    expected = date(2021, 12, 26) + timedelta(days=days_after_midnight)
    assert decision.day == expected


def _batches(votes: list[VoteSubmitted], cuts: list[int]) -> list[list[VoteSubmitted]]:
    points = [0, *sorted(c % (len(votes) + 1) for c in cuts), len(votes)]
    return [votes[a:b] for a, b in itertools.pairwise(points)]


@given(
    seconds=st.lists(st.integers(min_value=0, max_value=3 * 86_400), min_size=1, max_size=30),
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=6),
    daily_limit=st.integers(min_value=1, max_value=3),
    per_voter=st.integers(min_value=1, max_value=1_000),
)
@BATCHING
def test_no_day_ever_gets_more_than_the_daily_limit(
    seconds: list[int],
    order: random.Random,
    cuts: list[int],
    daily_limit: int,
    per_voter: int,
) -> None:
    poll = make_poll(daily_limit=daily_limit, rate_limits=RateLimits(per_voter=per_voter))
    voter = random_voter_id()
    start = datetime(2021, 12, 24, 20, 0, tzinfo=UTC)
    votes = [submit(poll, start + timedelta(seconds=s), voter=voter) for s in seconds]
    order.shuffle(votes)
    state = DecisionState()
    decisions = [d for batch in _batches(votes, cuts) for d in decide(poll, batch, state)]
    accepted = Counter(d.day for d in decisions if d.accepted)
    assert all(n <= daily_limit for n in accepted.values())
    if per_voter == 1_000:
        submitted = Counter(poll.day_of(v.received_at) for v in votes)
        assert accepted == Counter({d: min(n, daily_limit) for d, n in submitted.items()})


# --- rate limits ----------------------------------------------------------------------


def test_carrier_nat_500_voters_behind_one_address_all_accepted() -> None:
    poll = make_poll()
    start = at_noon(25)
    votes = [
        submit(poll, start + timedelta(milliseconds=110 * i), ip="100.64.0.1") for i in range(500)
    ]
    assert votes[-1].received_at - start < timedelta(minutes=1)
    assert all(d.accepted for d in decide(poll, votes))


def test_a_hammering_voter_is_rate_limited() -> None:
    poll = make_poll()
    voter = random_voter_id()
    start = at_noon(25)
    votes = [submit(poll, start + timedelta(seconds=i), voter=voter) for i in range(15)]
    got = reasons(decide(poll, votes))
    assert got[0] is None
    assert got[1:10] == ["daily_limit"] * 9
    assert got[10:] == ["rate_limited_voter"] * 5


def test_wrong_captchas_count_towards_the_voter_window() -> None:
    poll = make_poll(rate_limits=RateLimits(per_voter=3))
    voter = random_voter_id()
    start = at_noon(25)
    wrong = [
        submit(poll, start + timedelta(seconds=i), voter=voter, answer="XXXX") for i in range(3)
    ]
    right = submit(poll, start + timedelta(seconds=4), voter=voter)
    assert reasons(decide(poll, [*wrong, right])) == ["captcha_wrong"] * 3 + ["rate_limited_voter"]


def test_rate_limit_window_slides_over_received_at() -> None:
    poll = make_poll(daily_limit=100, rate_limits=RateLimits(per_voter=1, window_seconds=60))
    voter = random_voter_id()
    start = at_noon(25)
    votes = [
        submit(poll, start, voter=voter),
        submit(poll, start + timedelta(seconds=59.999999), voter=voter),
        submit(poll, start + timedelta(seconds=60), voter=voter),
    ]
    assert reasons(decide(poll, votes)) == [None, "rate_limited_voter", "rate_limited_voter"]
    votes = [
        submit(poll, start, voter=voter),
        submit(poll, start + timedelta(seconds=60), voter=voter),
    ]
    assert reasons(decide(poll, votes)) == [None, None]


def test_a_vote_judged_out_of_order_cannot_push_a_window_over_its_limit() -> None:
    poll = make_poll(daily_limit=100, rate_limits=RateLimits(per_voter=2))
    voter = random_voter_id()
    start = at_noon(25)
    later = [submit(poll, start + timedelta(seconds=s), voter=voter) for s in (10, 20, 30)]
    early = submit(poll, start + timedelta(seconds=5), voter=voter)
    # Accepting the early one would put three passed votes (5, 10, 20) in one minute.
    decided = reasons(decide(poll, [*later, early]))
    assert decided == [None, None, "rate_limited_voter", "rate_limited_voter"]


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=180_000), min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
)
def test_no_window_ever_holds_more_passed_votes_than_the_limit(
    offsets: list[int], order: random.Random
) -> None:
    limit = 3
    poll = make_poll(daily_limit=1000, rate_limits=RateLimits(per_voter=limit, window_seconds=60))
    voter = random_voter_id()
    start = at_noon(25)
    votes = [submit(poll, start + timedelta(milliseconds=ms), voter=voter) for ms in offsets]
    order.shuffle(votes)
    passed = sorted(
        d.received_at
        for d in decide(poll, votes)
        if d.reason is not RejectReason.RATE_LIMITED_VOTER
    )
    window = timedelta(seconds=60)
    for i, first in enumerate(passed):
        inside = [t for t in passed[i:] if t - first < window]
        assert len(inside) <= limit


def test_ip_limit_and_allowlist() -> None:
    limits = RateLimits(per_ip=5, per_subnet=8, allowlist=("203.0.113.7/32",))
    poll = make_poll(rate_limits=limits)
    start = at_noon(25)
    allowed = [submit(poll, start, ip="203.0.113.7") for _ in range(50)]
    neighbours = [submit(poll, start, ip="203.0.113.8") for _ in range(6)]
    decisions = decide(poll, [*allowed, *neighbours])
    assert all(d.accepted for d in decisions[:50])
    assert reasons(decisions[50:]) == [None] * 5 + ["rate_limited_ip"]


def test_allowlisted_address_is_never_limited_by_ip_or_subnet() -> None:
    limits = RateLimits(per_ip=1, per_subnet=1, allowlist=("2001:db8:aa::/48",))
    poll = make_poll(rate_limits=limits)
    start = at_noon(25)
    votes = [submit(poll, start, ip=f"2001:db8:aa:1::{i:x}") for i in range(1, 40)]
    assert all(d.accepted for d in decide(poll, votes))


def test_subnet_limit_groups_ipv6_by_64() -> None:
    poll = make_poll(rate_limits=RateLimits(per_ip=100, per_subnet=3))
    start = at_noon(25)
    same_64 = [submit(poll, start, ip=f"2001:db8:1:2::{i}") for i in range(1, 5)]
    other_64 = submit(poll, start, ip="2001:db8:1:3::1")
    got = reasons(decide(poll, [*same_64, other_64]))
    assert got == [None, None, None, "rate_limited_subnet", None]


def test_ipv4_mapped_addresses_share_the_ipv4_limits() -> None:
    poll = make_poll(rate_limits=RateLimits(per_ip=2))
    start = at_noon(25)
    votes = [
        submit(poll, start, ip="198.51.100.7"),
        submit(poll, start, ip="::ffff:198.51.100.7"),
        submit(poll, start, ip="198.51.100.7"),
    ]
    assert reasons(decide(poll, votes)) == [None, None, "rate_limited_ip"]


# --- batches and the store's view ---------------------------------------------------------


def test_redelivered_vote_id_in_a_batch_is_decided_once() -> None:
    poll = make_poll()
    vote = submit(poll, at_noon(25))
    decisions = decide(poll, [vote, vote])
    assert [d.vote_id for d in decisions] == [vote.vote_id]


def test_state_records_the_delta_to_persist() -> None:
    poll = make_poll()
    voter = random_voter_id()
    votes = [
        submit(poll, at_noon(25), voter=voter, ip="::ffff:10.0.0.9"),
        submit(poll, at_noon(25), voter=voter),
    ]
    state = DecisionState()
    decide(poll, votes, state)
    delta = state.take_delta()
    assert delta.accepted == Counter({(poll.id, voter, date(2021, 12, 25)): 1})
    assert delta.used_captchas == {captcha.captcha_fingerprint(v.captcha_id) for v in votes}
    assert (poll.id, "ip", "10.0.0.9") in {key for key, _, _ in delta.events}
    assert (poll.id, "subnet", "10.0.0.0/24") in {key for key, _, _ in delta.events}
    assert {vote_id for _, _, vote_id in delta.events} == {v.vote_id for v in votes}
    assert state.take_delta() == StateDelta()


def test_keys_for_skips_votes_the_cheap_rules_reject() -> None:
    poll = make_poll()
    at = at_noon(25)
    good = submit(poll, at, ip="198.51.100.1")
    closed = submit(poll, CLOSES, ip="198.51.100.2")
    keys = keys_for([good, closed], catalog_of(poll))
    assert keys.days == {(poll.id, good.voter_id, date(2021, 12, 25))}
    assert keys.captchas == {captcha.captcha_fingerprint(good.captcha_id)}
    reach = timedelta(seconds=60)
    assert keys.windows[(poll.id, "ip", "198.51.100.1")] == (at - reach, at + reach)
    assert (poll.id, "ip", "198.51.100.2") not in keys.windows


@dataclass
class FakeStore:
    """Keeps everything, but hands a batch only what keys_for names (as Postgres would)."""

    accepted: dict[DayKey, int] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    events: dict[WindowKey, list[datetime]] = field(default_factory=dict)

    def load(self, keys: StateKeys) -> DecisionState:
        return DecisionState(
            accepted_per_day={k: self.accepted[k] for k in keys.days if k in self.accepted},
            used_captchas=set(keys.captchas) & self.used,
            recent={
                key: [t for t in self.events.get(key, []) if since < t <= until]
                for key, (since, until) in keys.windows.items()
            },
        )

    def save(self, delta: StateDelta) -> None:
        for key, n in delta.accepted.items():
            self.accepted[key] = self.accepted.get(key, 0) + n
        self.used |= delta.used_captchas
        for window_key, at, _ in delta.events:
            bisect.insort(self.events.setdefault(window_key, []), at)

    def decide(self, catalog: Catalog, batch: list[VoteSubmitted]) -> list[Decision]:
        state = self.load(keys_for(batch, catalog))
        decisions = decide_batch(batch, catalog, SECRET, state)
        self.save(state.take_delta())
        return decisions


VOTERS = ("v-1", "v-2", "v-3")
ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.1.1", "::ffff:10.0.0.1", "2001:db8::1", "2001:db8::2")
KINDS = ("right", "right", "wrong", "reuse", "expired", "bad_choice")

step = st.tuples(
    st.sampled_from(VOTERS),
    st.sampled_from(ADDRESSES),
    st.integers(min_value=0, max_value=150),
    st.sampled_from(KINDS),
)


def _scenario(poll: Poll, steps: list[tuple[str, str, int, str]]) -> list[VoteSubmitted]:
    start = MIDNIGHT - timedelta(seconds=120)
    votes: list[VoteSubmitted] = []
    for voter, ip, second, kind in steps:
        at = start + timedelta(seconds=second)
        if kind == "reuse" and votes:
            vote = submit(poll, at, voter=voter, ip=ip, captcha_id=votes[-1].captcha_id)
        elif kind == "expired":
            vote = submit(
                poll,
                at,
                voter=voter,
                ip=ip,
                captcha_id=captcha.issue(SECRET, at - timedelta(hours=1)),
            )
        else:
            wrong = {"wrong": "XXXX"}.get(kind)
            choice = "meh" if kind == "bad_choice" else "good"
            vote = submit(poll, at, voter=voter, ip=ip, answer=wrong, choice=choice)
        votes.append(vote)
    return votes


@given(steps=st.lists(step, min_size=1, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=6))
@BATCHING
def test_batching_does_not_change_decisions(
    steps: list[tuple[str, str, int, str]], cuts: list[int]
) -> None:
    limits = RateLimits(window_seconds=60, per_voter=3, per_ip=4, per_subnet=6)
    poll = make_poll(daily_limit=2, rate_limits=limits)
    catalog = catalog_of(poll)
    votes = _scenario(poll, steps)
    whole = FakeStore().decide(catalog, votes)
    store = FakeStore()
    split = [d for batch in _batches(votes, cuts) for d in store.decide(catalog, batch)]
    assert split == whole


# --- addresses, locks and events on the hot path -----------------------------------------

octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "", "x"]))
address_text = st.one_of(
    st.lists(octet, min_size=3, max_size=5).map(".".join),
    st.lists(octet, min_size=4, max_size=4).map(lambda o: "::ffff:" + ".".join(o)),
    st.ip_addresses().map(str),
    st.text(max_size=20),
)


def _reference_address_and_subnet(ip: str) -> tuple[str, str]:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip, ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(address), str(ipaddress.ip_network((int(address), prefix), strict=False))


@given(ip=address_text)
@settings(max_examples=300, deadline=None)
def test_address_and_subnet_agree_with_ipaddress(ip: str) -> None:
    assert (rules.address_of(ip), rules.subnet_of(ip)) == _reference_address_and_subnet(ip)


@given(ip=address_text)
@settings(max_examples=300, deadline=None)
def test_allowlist_check_agrees_with_the_catalog(ip: str) -> None:
    limits = RateLimits(allowlist=("100.64.0.0/10", "10.1.0.0/16", "2001:db8::/32"))
    address = rules.address_of(ip)
    assert rules._allowlisted(limits.allowlist, address) is limits.allows(address)


def test_locks_cover_every_row_a_batch_reads() -> None:
    poll = make_poll(rate_limits=RateLimits(allowlist=("100.64.0.0/10",)))
    votes = [
        submit(poll, at_noon(25), ip="198.51.100.7"),
        submit(poll, at_noon(25), ip="100.64.0.1"),
    ]
    keys = keys_for(votes, catalog_of(poll))
    locks = set(store.lock_keys(keys))
    for poll_id, voter, _day in keys.days:
        assert f"rate:{poll_id}:voter:{voter}" in locks
    for poll_id, scope, key in keys.windows:
        if scope == "ip":
            assert f"rate:{poll_id}:subnet:{rules.subnet_of(key)}" in locks
    assert {f"captcha:{c}" for c in keys.captchas} <= locks
    assert len(locks) == 2 * 2 + 1  # voter and captcha of each, one subnet


event_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


@given(vote_id=event_text, voter=event_text, reason=st.sampled_from([None, *RejectReason]))
@settings(max_examples=100, deadline=None)
def test_decision_events_are_the_event_models_json(
    vote_id: str, voter: str, reason: RejectReason | None
) -> None:
    received = datetime(2022, 1, 5, 1, 2, 3, 4_000, tzinfo=UTC)
    decided = datetime(2022, 1, 5, 9, 2, 4, tzinfo=SHANGHAI)
    verdict: rules.Verdict = "accepted" if reason is None else "rejected"
    day = date(2022, 1, 5)
    decision = Decision(vote_id, "p-1", voter, "good", verdict, reason, day, received)
    topic, value = consumer.decision_event(decision, decided, consumer.Topics())
    expected: VoteAccepted | VoteRejected
    if reason is None:
        expected = VoteAccepted(
            vote_id=vote_id,
            poll_id="p-1",
            choice="good",
            voter_id=voter,
            day=day,
            received_at=received,
            decided_at=decided,
        )
        assert topic == consumer.Topics().accepted
    else:
        expected = VoteRejected(
            vote_id=vote_id,
            poll_id="p-1",
            voter_id=voter,
            reason=reason,
            received_at=received,
            decided_at=decided,
        )
        assert topic == consumer.Topics().rejected
    assert value == expected.model_dump_json().encode()
