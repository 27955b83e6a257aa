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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Final, Literal

from shared.captcha import CaptchaVerdict, captcha_fingerprint, judge
from shared.catalog import Catalog, Poll, PollState, RateLimits
from shared.events import RejectReason, VoteSubmitted

__all__ = [
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


# Parsing addresses is most of a decision's cost, and a batch repeats the same few
# (carrier NAT, hot subnets); the mapping is pure, so caching it is safe.
@functools.lru_cache(maxsize=65_536)
def _address_and_subnet(ip: str) -> tuple[str, str]:
    address = _parse_ip(ip)
    if address is None:
        return ip, ip
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    if isinstance(address, ipaddress.IPv4Address):
        subnet = ipaddress.IPv4Network((int(address), _IPV4_PREFIX), strict=False)
    else:
        subnet = ipaddress.IPv6Network((int(address), _IPV6_PREFIX), strict=False)
    return str(address), str(subnet)


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
    events: list[tuple[WindowKey, datetime]] = field(default_factory=list)


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


def _window_keys(poll: Poll, vote: VoteSubmitted) -> list[WindowKey]:
    """The voter's window, then (unless allowlisted) the address's and the subnet's."""
    address, subnet = _address_and_subnet(vote.client_ip)
    keys: list[WindowKey] = [(poll.id, "voter", vote.voter_id)]
    if not (poll.rate_limits.allowlist and poll.rate_limits.allows(address)):
        keys.append((poll.id, "ip", address))
        keys.append((poll.id, "subnet", subnet))
    return keys


def _unique(submissions: Iterable[VoteSubmitted]) -> list[VoteSubmitted]:
    seen: set[str] = set()
    unique: list[VoteSubmitted] = []
    for vote in submissions:
        if vote.vote_id not in seen:
            seen.add(vote.vote_id)
            unique.append(vote)
    return unique


def _widen(
    span: tuple[datetime, datetime] | None, since: datetime, until: datetime
) -> tuple[datetime, datetime]:
    return (since, until) if span is None else (min(span[0], since), max(span[1], until))


def keys_for(submissions: Iterable[VoteSubmitted], catalog: Catalog) -> StateKeys:
    """The rows a batch reads; the store also locks them, so that several antifraud
    instances deciding at once serialise on shared voters, addresses and captchas and
    together never exceed a limit."""
    days: set[DayKey] = set()
    captchas: set[str] = set()
    windows: dict[WindowKey, tuple[datetime, datetime]] = {}
    for vote in submissions:
        poll = catalog.get(vote.poll_id)
        if poll is None or _cheap_rejection(poll, vote) is not None:
            continue
        days.add((poll.id, vote.voter_id, poll.day_of(vote.received_at)))
        captchas.add(captcha_fingerprint(vote.captcha_id))
        reach = timedelta(seconds=poll.rate_limits.window_seconds)
        for key in _window_keys(poll, vote):
            windows[key] = _widen(
                windows.get(key), vote.received_at - reach, vote.received_at + reach
            )
    return StateKeys(frozenset(days), frozenset(captchas), windows)


def _rate_limit_and_count(
    poll: Poll, vote: VoteSubmitted, state: DecisionState
) -> RejectReason | None:
    window = timedelta(seconds=poll.rate_limits.window_seconds)
    keys = _window_keys(poll, vote)
    earlier = {
        scope: count_in_window(
            state.recent.get((poll_id, scope, key), []), vote.received_at, window
        )
        for poll_id, scope, key in keys
    }
    reason = judge_rate_limits(
        poll.rate_limits,
        by_voter=earlier["voter"],
        by_ip=earlier.get("ip", 0),
        by_subnet=earlier.get("subnet", 0),
        allowlisted="ip" not in earlier,
    )
    for key in keys:
        bisect.insort(state.recent.setdefault(key, []), vote.received_at)
        state.delta.events.append((key, vote.received_at))
    return reason


def _captcha_and_burn(
    vote: VoteSubmitted, secret: str, state: DecisionState
) -> RejectReason | None:
    verdict = judge(secret, vote.captcha_id, vote.captcha_answer, vote.received_at)
    fingerprint = captcha_fingerprint(vote.captcha_id)
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


def _decide_one(
    vote: VoteSubmitted, catalog: Catalog, secret: str, state: DecisionState
) -> Decision:
    poll = catalog.get(vote.poll_id)
    if poll is None:
        return _decision(vote, RejectReason.UNKNOWN_POLL, None)
    day = poll.day_of(vote.received_at)
    # Short-circuits in rule order: a rule's state changes happen only if it is reached.
    reason = (
        _cheap_rejection(poll, vote)
        or _rate_limit_and_count(poll, vote, state)
        or _captcha_and_burn(vote, secret, state)
        or _daily_limit_and_count(poll, vote, day, state)
    )
    return _decision(vote, reason, day)


def decide_batch(
    submissions: Iterable[VoteSubmitted],
    catalog: Catalog,
    captcha_secret: str,
    state: DecisionState,
) -> list[Decision]:
    """Decide in the given order; each decision sees the effects of those before it."""
    return [_decide_one(vote, catalog, captcha_secret, state) for vote in _unique(submissions)]
