"""Every antifraud decision, as pure functions: no await, no SQL, no clock.

Time is always the submission's ``received_at`` (contract section 6), so a lagging or
replaying consumer decides exactly as a fast one. The store preloads a
:class:`DecisionState` for the keys :func:`keys_for` names, :func:`decide_batch` judges
the batch against it and records what changed in ``state.delta``, and the store
persists that delta in the same transaction as the decisions.

Rule order (the first rule that fails decides the reason):

1. ``unknown_poll``
2. ``poll_not_open`` / ``poll_closed``: open from ``opens_at`` inclusive to
   ``closes_at`` exclusive; the close instant itself is closed.
3. ``invalid_choice``
4. ``rate_limited_voter``, ``rate_limited_ip``, ``rate_limited_subnet``
5. ``captcha_malformed``, ``captcha_expired``, ``captcha_reused``, ``captcha_wrong``
6. ``daily_limit``: accepted votes per (poll, voter, day in the poll's time zone).

Choices this order encodes:

- Rate-limit windows count every submission that passed rules 1-3, whatever happens
  to it afterwards (rate limited, wrong captcha, over the daily limit, accepted). A bot
  hammering wrong captchas or repeat votes is throttled like any other flood, and a
  flood keeps its source throttled for as long as it lasts.
- A submission is judged against the counted submissions received within
  ``window_seconds`` of it on either side, ``(received_at - w, received_at + w)``.
  Processed in order this is the usual trailing window (nothing later is known yet).
  Processed out of order - two replicas on different partitions, a lagging one -
  it still guarantees that no interval of length ``w`` ever holds more than the
  limit of submissions that passed: the last of any ``limit + 1`` of them to be
  judged sees the other ``limit`` inside its span and is refused.
- Rate limits come before the captcha so a throttled flood costs no HMAC and does not
  burn the id it carried (it was never counted, so it may still be used once).
- A captcha judged ``ok`` or ``wrong`` is burnt: otherwise one image could be brute
  forced with many guesses. Malformed ids are not genuine and expired ones can never
  pass again, so neither needs remembering.
- Addresses on a poll's allowlist are neither limited by IP or subnet nor counted in
  those windows (they may share a /24 with ordinary addresses). The voter limit
  still applies to them.
- IPv4-mapped IPv6 addresses count as IPv4; subnets are /24 (IPv4) and /64 (IPv6). A
  client address that does not parse is its own IP and subnet key.
- The first copy of a ``vote_id`` in a batch is decided; later copies are redeliveries
  and get no second decision. Ids decided in earlier batches are the store's to skip.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final, Literal, NamedTuple

from shared.captcha import CaptchaVerdict, captcha_fingerprint, judge
from shared.catalog import Catalog, Poll, PollState, RateLimits
from shared.events import RejectReason, VoteSubmitted

__all__ = [
    "Batch",
    "DayKey",
    "Decision",
    "DecisionState",
    "Scope",
    "StateDelta",
    "StateKeys",
    "Verdict",
    "WindowKey",
    "address_of",
    "count_in_window",
    "decide_batch",
    "judge_captcha",
    "judge_choice",
    "judge_daily_limit",
    "judge_poll",
    "judge_rate_limits",
    "judge_window",
    "keys_for",
    "subnet_of",
]

Scope = Literal["voter", "ip", "subnet"]
Verdict = Literal["accepted", "rejected"]
DayKey = tuple[str, str, date]  # (poll_id, voter_id, day)
WindowKey = tuple[str, Scope, str]  # (poll_id, scope, voter id / address / subnet)

_IPV4_PREFIX: Final = 24
_IPV6_PREFIX: Final = 64


# --- single rules -------------------------------------------------------------------


def judge_poll(catalog: Catalog, poll_id: str) -> RejectReason | None:
    return RejectReason.UNKNOWN_POLL if catalog.get(poll_id) is None else None


def judge_window(poll: Poll, received_at: datetime) -> RejectReason | None:
    state = poll.state_at(received_at)
    if state is PollState.UPCOMING:
        return RejectReason.POLL_NOT_OPEN
    if state is PollState.CLOSED:
        return RejectReason.POLL_CLOSED
    return None


def judge_choice(poll: Poll, choice: str) -> RejectReason | None:
    return None if choice in poll.options else RejectReason.INVALID_CHOICE


def judge_captcha(verdict: CaptchaVerdict, reused: bool) -> RejectReason | None:
    """Malformed and expired say more than reuse; reuse hides whether a guess was right."""
    if verdict is CaptchaVerdict.MALFORMED:
        return RejectReason.CAPTCHA_MALFORMED
    if verdict is CaptchaVerdict.EXPIRED:
        return RejectReason.CAPTCHA_EXPIRED
    if reused:
        return RejectReason.CAPTCHA_REUSED
    if verdict is CaptchaVerdict.WRONG:
        return RejectReason.CAPTCHA_WRONG
    return None


def judge_daily_limit(accepted_today: int, limit: int) -> RejectReason | None:
    return RejectReason.DAILY_LIMIT if accepted_today >= limit else None


def judge_rate_limits(
    limits: RateLimits, *, by_voter: int, by_ip: int, by_subnet: int, allowlisted: bool
) -> RejectReason | None:
    """Counts are earlier submissions in the window; the limit is how many may precede."""
    if by_voter >= limits.per_voter:
        return RejectReason.RATE_LIMITED_VOTER
    if allowlisted:
        return None
    if by_ip >= limits.per_ip:
        return RejectReason.RATE_LIMITED_IP
    if by_subnet >= limits.per_subnet:
        return RejectReason.RATE_LIMITED_SUBNET
    return None


def count_in_window(times: Sequence[datetime], received_at: datetime, window: timedelta) -> int:
    """How many of the sorted ``times`` fall in ``(received_at - window, received_at + window)``."""
    return bisect.bisect_left(times, received_at + window) - bisect.bisect_right(
        times, received_at - window
    )


# --- addresses ----------------------------------------------------------------------


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Exactly the dotted quads ``ipaddress`` accepts (no leading zeros), which are also their
# own canonical text: the common case needs no address object at all.
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


# A batch repeats the same few addresses (carrier NAT, hot subnets) and the mapping is
# pure, so caching it is safe.
@functools.lru_cache(maxsize=65_536)
def _address_and_subnet(ip: str) -> tuple[str, str]:
    text = ip.strip()
    if _PLAIN_IPV4.fullmatch(text):
        return text, text[: text.rindex(".")] + ".0/24"
    address = _parse_ip(ip)
    if address is None:
        return ip, ip
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    if isinstance(address, ipaddress.IPv4Address):
        subnet = ipaddress.IPv4Network((int(address), _IPV4_PREFIX), strict=False)
    else:
        subnet = ipaddress.IPv6Network((int(address), _IPV6_PREFIX), strict=False)
    return str(address), str(subnet)


@functools.lru_cache(maxsize=256)
def _networks(
    allowlist: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allowlist)


@functools.lru_cache(maxsize=256)
def _ipv4_ranges(allowlist: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(network, netmask) of the allowlist's IPv4 networks, as integers."""
    return tuple(
        (int(n.network_address), int(n.netmask)) for n in _networks(allowlist) if n.version == 4
    )


# The same test as ``RateLimits.allows``, with the allowlist parsed once per poll rather
# than once per vote, and plain dotted quads compared as integers.
@functools.lru_cache(maxsize=65_536)
def _allowlisted(allowlist: tuple[str, ...], address: str) -> bool:
    if _PLAIN_IPV4.fullmatch(address):
        a, b, c, d = (int(octet) for octet in address.split("."))
        value = a << 24 | b << 16 | c << 8 | d
        return any(value & mask == network for network, mask in _ipv4_ranges(allowlist))
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in _networks(allowlist))


def address_of(ip: str) -> str:
    """Canonical text of a client address (IPv4-mapped IPv6 as IPv4); junk kept as is."""
    return _address_and_subnet(ip)[0]


def subnet_of(ip: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) holding the address, e.g. ``203.0.113.0/24``."""
    return _address_and_subnet(ip)[1]


# --- state ----------------------------------------------------------------------------


@dataclass
class StateDelta:
    """What a batch added, for the store to persist."""

    accepted: Counter[DayKey] = field(default_factory=Counter)
    used_captchas: set[str] = field(default_factory=set)
    # (window, received_at, vote_id) of each submission counted in a window.
    events: list[tuple[WindowKey, datetime, str]] = field(default_factory=list)


@dataclass
class DecisionState:
    """The slice of antifraud state a batch needs, preloaded by the store."""

    accepted_per_day: dict[DayKey, int] = field(default_factory=dict)
    used_captchas: set[str] = field(default_factory=set)
    # Window key -> received_at of earlier counted submissions, sorted ascending.
    recent: dict[WindowKey, list[datetime]] = field(default_factory=dict)
    delta: StateDelta = field(default_factory=StateDelta)

    def take_delta(self) -> StateDelta:
        delta, self.delta = self.delta, StateDelta()
        return delta


@dataclass(frozen=True)
class StateKeys:
    """What the store must load (and lock) before deciding a batch."""

    days: frozenset[DayKey]
    captchas: frozenset[str]
    # Window key -> (since, until): load events received in (since, until].
    windows: Mapping[WindowKey, tuple[datetime, datetime]]


@dataclass(frozen=True)
class Decision:
    vote_id: str
    poll_id: str
    voter_id: str
    choice: str
    verdict: Verdict
    reason: RejectReason | None
    day: date | None  # the voting day; None only for an unknown poll
    received_at: datetime

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"


# --- batch --------------------------------------------------------------------------


def _cheap_rejection(poll: Poll, vote: VoteSubmitted) -> RejectReason | None:
    """Rules 2-3: stateless, and the gate to being counted in a rate-limit window."""
    return judge_window(poll, vote.received_at) or judge_choice(poll, vote.choice)


def _window_keys(poll: Poll, vote: VoteSubmitted) -> tuple[WindowKey, ...]:
    """The voter's window, then (unless allowlisted) the address's and the subnet's."""
    address, subnet = _address_and_subnet(vote.client_ip)
    allowlist = poll.rate_limits.allowlist
    if allowlist and _allowlisted(allowlist, address):
        return ((poll.id, "voter", vote.voter_id),)
    return (
        (poll.id, "voter", vote.voter_id),
        (poll.id, "ip", address),
        (poll.id, "subnet", subnet),
    )


class _Facts(NamedTuple):
    """What a vote's content alone says; ``windows`` is empty unless rules 1-3 passed,
    and only then is the captcha's ``fingerprint`` worked out."""

    poll: Poll | None
    reason: RejectReason | None
    day: date | None
    windows: tuple[WindowKey, ...]
    fingerprint: str


def _facts(vote: VoteSubmitted, polls: Mapping[str, Poll]) -> _Facts:
    poll = polls.get(vote.poll_id)
    if poll is None:
        return _Facts(None, RejectReason.UNKNOWN_POLL, None, (), "")
    day = poll.day_of(vote.received_at)
    reason = _cheap_rejection(poll, vote)
    if reason is not None:
        return _Facts(poll, reason, day, (), "")
    fingerprint = captcha_fingerprint(vote.captcha_id)
    return _Facts(poll, None, day, _window_keys(poll, vote), fingerprint)


@dataclass(frozen=True)
class Batch:
    """A batch's distinct votes with what each one's content says, worked out once for
    both :func:`keys_for` and :func:`decide_batch`."""

    votes: list[VoteSubmitted]
    facts: list[_Facts]

    @classmethod
    def of(cls, submissions: Iterable[VoteSubmitted], catalog: Catalog) -> Batch:
        votes = _unique(submissions)
        polls = {poll.id: poll for poll in catalog.polls}
        return cls(votes, [_facts(vote, polls) for vote in votes])

    def only(self, vote_ids: set[str]) -> Batch:
        """The votes with these ids, in the same order."""
        kept = [i for i, vote in enumerate(self.votes) if vote.vote_id in vote_ids]
        return Batch([self.votes[i] for i in kept], [self.facts[i] for i in kept])


def _unique(submissions: Iterable[VoteSubmitted]) -> list[VoteSubmitted]:
    seen: set[str] = set()
    unique: list[VoteSubmitted] = []
    for vote in submissions:
        if vote.vote_id not in seen:
            seen.add(vote.vote_id)
            unique.append(vote)
    return unique


def _batch(submissions: Iterable[VoteSubmitted] | Batch, catalog: Catalog) -> Batch:
    return submissions if isinstance(submissions, Batch) else Batch.of(submissions, catalog)


def keys_for(submissions: Iterable[VoteSubmitted] | Batch, catalog: Catalog) -> StateKeys:
    """The rows a batch reads; the store also locks them (through keys that cover them),
    so that several antifraud instances deciding at once serialise on shared voters,
    addresses and captchas and together never exceed a limit."""
    batch = _batch(submissions, catalog)
    days: set[DayKey] = set()
    captchas: set[str] = set()
    windows: dict[WindowKey, tuple[datetime, datetime]] = {}
    for vote, facts in zip(batch.votes, batch.facts, strict=True):
        if not facts.windows:
            continue
        assert facts.poll is not None and facts.day is not None  # noqa: S101 - rules 1-3 passed
        days.add((facts.poll.id, vote.voter_id, facts.day))
        captchas.add(facts.fingerprint)
        reach = _reach(facts.poll.rate_limits.window_seconds)
        since, until = vote.received_at - reach, vote.received_at + reach
        for key in facts.windows:
            span = windows.get(key)
            if span is None:
                windows[key] = (since, until)
            elif since < span[0] or until > span[1]:
                windows[key] = (min(span[0], since), max(span[1], until))
    return StateKeys(frozenset(days), frozenset(captchas), windows)


@functools.lru_cache(maxsize=64)
def _reach(window_seconds: int) -> timedelta:
    return timedelta(seconds=window_seconds)


_NOTHING: Final[tuple[datetime, ...]] = ()


def _rate_limit_and_count(
    poll: Poll, vote: VoteSubmitted, windows: tuple[WindowKey, ...], state: DecisionState
) -> RejectReason | None:
    window = _reach(poll.rate_limits.window_seconds)
    at = vote.received_at
    recent = state.recent
    counts = [count_in_window(recent.get(key, _NOTHING), at, window) for key in windows]
    allowlisted = len(counts) == 1
    reason = judge_rate_limits(
        poll.rate_limits,
        by_voter=counts[0],
        by_ip=0 if allowlisted else counts[1],
        by_subnet=0 if allowlisted else counts[2],
        allowlisted=allowlisted,
    )
    events = state.delta.events
    for key in windows:
        times = recent.get(key)
        if times is None:
            recent[key] = [at]
        else:
            bisect.insort(times, at)
        events.append((key, at, vote.vote_id))
    return reason


def _captcha_and_burn(
    vote: VoteSubmitted, fingerprint: str, secret: str, state: DecisionState
) -> RejectReason | None:
    verdict = judge(secret, vote.captcha_id, vote.captcha_answer, vote.received_at)
    reason = judge_captcha(verdict, reused=fingerprint in state.used_captchas)
    if reason in (None, RejectReason.CAPTCHA_WRONG):
        state.used_captchas.add(fingerprint)
        state.delta.used_captchas.add(fingerprint)
    return reason


def _daily_limit_and_count(
    poll: Poll, vote: VoteSubmitted, day: date, state: DecisionState
) -> RejectReason | None:
    key: DayKey = (poll.id, vote.voter_id, day)
    reason = judge_daily_limit(state.accepted_per_day.get(key, 0), poll.daily_limit)
    if reason is None:
        state.accepted_per_day[key] = state.accepted_per_day.get(key, 0) + 1
        state.delta.accepted[key] += 1
    return reason


def _decision(vote: VoteSubmitted, reason: RejectReason | None, day: date | None) -> Decision:
    return Decision(
        vote_id=vote.vote_id,
        poll_id=vote.poll_id,
        voter_id=vote.voter_id,
        choice=vote.choice,
        verdict="accepted" if reason is None else "rejected",
        reason=reason,
        day=day,
        received_at=vote.received_at,
    )


def _decide_one(vote: VoteSubmitted, facts: _Facts, secret: str, state: DecisionState) -> Decision:
    if facts.poll is None or facts.reason is not None:
        return _decision(vote, facts.reason, facts.day)
    poll, day = facts.poll, facts.day
    assert day is not None  # noqa: S101 - a known poll always gives a day
    # Short-circuits in rule order: a rule's state changes happen only if it is reached.
    reason = (
        _rate_limit_and_count(poll, vote, facts.windows, state)
        or _captcha_and_burn(vote, facts.fingerprint, secret, state)
        or _daily_limit_and_count(poll, vote, day, state)
    )
    return _decision(vote, reason, day)


def decide_batch(
    submissions: Iterable[VoteSubmitted] | Batch,
    catalog: Catalog,
    captcha_secret: str,
    state: DecisionState,
) -> list[Decision]:
    """Decide in the given order; each decision sees the effects of those before it."""
    batch = _batch(submissions, catalog)
    return [
        _decide_one(vote, facts, captcha_secret, state)
        for vote, facts in zip(batch.votes, batch.facts, strict=True)
    ]
