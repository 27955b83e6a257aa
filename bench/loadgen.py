"""An open-model load generator for the vote API.

Votes are sent at a constant arrival rate on a fixed schedule: vote ``i`` is due at
``i / rate`` seconds after the start, whether or not earlier votes were answered, and its
latency is measured from that intended instant. A server that stalls therefore shows the
whole stall in the percentiles instead of slowing the generator down (no coordinated
omission). Runs are bounded by a count, a duration, or both.

The traffic is a configurable mix of what a real campaign sees:

    valid           a fresh voter, the right captcha answer        -> accepted
    repeat          a voter of this run votes again the same day   -> rejected daily_limit
    wrong_captcha   a fresh voter, a wrong answer                  -> rejected captcha_wrong
    burst           runs of ``burst_size`` consecutive votes from one address (a script)
    nat             fresh voters all behind one carrier-NAT address (honest phones)

Addresses. Rate limits key on the client address, which the edge takes from
``X-Forwarded-For`` only when the peer is a trusted proxy. With ``forwarded_for`` on, the
generator calls ingest directly from 127.0.0.1 (trusted in the local stack) and sends
each vote's simulated address: every voter its own address spread over 10.0.0.0/8, the
NAT voters ``NAT_ADDRESS``, the burst script ``BURST_ADDRESS``. Through the gateway
(``forwarded_for`` off) nginx replaces the header, so every vote comes from 127.0.0.1:
the whole run looks like one very large NAT.

Identities and captchas come from the API (``POST /api/v1/session`` before the run,
``POST /api/v1/captcha`` just ahead of each vote, answered with
:func:`shared.captcha.expected_answer`) or, for runs too large for that, are minted
locally with the stack's secrets (``"mint"``): the same signed tokens and ids the
services issue, without the cost of issuing them in the measured process.

``run_load(config)`` returns a :class:`LoadReport` holding every vote sent - its
``vote_id`` when it got a 202, its status and problem code otherwise - so a chaos run can
reconcile what was acknowledged with what was decided and counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import random
import resource
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

from bench.http1 import ConnectionPool, HttpError
from shared.auth import VoterTokens
from shared.captcha import ALPHABET, expected_answer, issue
from shared.service import tuned_gc

NAT_ADDRESS = "100.64.0.1"  # carrier-grade NAT shared space (RFC 6598)
BURST_ADDRESS = "198.51.100.7"  # documentation range (RFC 5737): one scripted client
SETUP_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # benchmarking range (RFC 2544)
CHOICES = ("excellent", "good", "fair", "poor")
USER_AGENT = "votes-bench/1"

# Latencies are kept in microseconds from 1 us to one minute with 3 significant digits.
_LOWEST_US = 1
_HIGHEST_US = 60_000_000
_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)

# Votes due within this much are dispatched together rather than slept for one by one.
_MIN_SLEEP = 0.0005
_MAX_BATCH = 64

# A status of 0 means the request got no answer at all (refused, reset, timed out).
NO_ANSWER = 0


class Kind(StrEnum):
    VALID = "valid"
    REPEAT = "repeat"
    WRONG_CAPTCHA = "wrong_captcha"
    BURST = "burst"
    NAT = "nat"


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of vote (normalised), and the length of a scripted burst."""

    valid: float = 0.80
    repeat: float = 0.08
    wrong_captcha: float = 0.05
    burst: float = 0.04
    nat: float = 0.03
    burst_size: int = 20

    def __post_init__(self) -> None:
        shares = self.shares()
        if any(value < 0 for value in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError("mix shares must be >= 0 and not all zero")
        if self.burst_size < 1:
            raise ValueError("burst_size must be >= 1")

    def shares(self) -> dict[Kind, float]:
        return {
            Kind.VALID: self.valid,
            Kind.REPEAT: self.repeat,
            Kind.WRONG_CAPTCHA: self.wrong_captcha,
            Kind.BURST: self.burst,
            Kind.NAT: self.nat,
        }

    @classmethod
    def only_valid(cls) -> Mix:
        return cls(valid=1.0, repeat=0.0, wrong_captcha=0.0, burst=0.0, nat=0.0)


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Schedule:
    """Intended send instants, in seconds from the start: ``i / rate``."""

    rate: float
    count: int | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0 or not math.isfinite(self.rate):
            raise ValueError("rate must be a positive number of votes per second")
        if self.count is None and self.duration is None:
            raise ValueError("bound the run by a count, a duration or both")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.duration is not None and self.duration < 0:
            raise ValueError("duration must be >= 0")

    def __len__(self) -> int:
        limits = []
        if self.count is not None:
            limits.append(self.count)
        if self.duration is not None:
            # Votes due strictly before the end; the tiny epsilon absorbs float error
            # so that 10 s at 100/s is exactly 1000 votes.
            limits.append(math.ceil(self.duration * self.rate - 1e-9))
        return min(limits)

    def intended(self, index: int) -> float:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return index / self.rate

    def __iter__(self) -> Iterator[float]:
        return (index / self.rate for index in range(len(self)))


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlannedVote:
    """What vote ``seq`` will be: its kind, which voter sends it, and from where."""

    seq: int
    kind: Kind
    voter: int  # index into the run's voters; a repeat reuses an earlier one
    address: str
    choice: str


def assign_kinds(n: int, mix: Mix, rng: random.Random) -> list[Kind]:
    """Kinds for ``n`` slots with the mix's shares; bursts come in runs of ``burst_size``.

    A run of a burst is drawn with weight ``burst / burst_size``, so that over many
    slots the share of burst *votes* is the mix's burst share.
    """
    shares = mix.shares()
    kinds = list(shares)
    weights = [shares[k] / (mix.burst_size if k is Kind.BURST else 1) for k in kinds]
    out: list[Kind] = []
    while len(out) < n:
        kind = rng.choices(kinds, weights)[0]
        out.extend([kind] * (mix.burst_size if kind is Kind.BURST else 1))
    return out[:n]


def individual_address(rng: random.Random) -> str:
    # Spread over 10.0.0.0/8 so that neither one address nor one /24 gathers voters.
    return str(ipaddress.IPv4Address((10 << 24) | rng.getrandbits(24)))


def plan_votes(
    n: int, mix: Mix, rng: random.Random, choices: Sequence[str] = CHOICES
) -> tuple[list[PlannedVote], int]:
    """The run's votes and how many distinct voters they need.

    Every kind but ``repeat`` brings a fresh voter; a repeat is sent by a voter who voted
    earlier in the run (the first votes of a run are fresh even when drawn as repeats,
    since no one has voted yet).
    """
    plan: list[PlannedVote] = []
    homes: list[str] = []
    for seq, drawn in enumerate(assign_kinds(n, mix, rng)):
        kind = Kind.VALID if drawn is Kind.REPEAT and not homes else drawn
        if kind is Kind.REPEAT:
            voter = rng.randrange(len(homes))
            address = homes[voter]
        else:
            voter = len(homes)
            if kind is Kind.NAT:
                address = NAT_ADDRESS
            elif kind is Kind.BURST:
                address = BURST_ADDRESS
            else:
                address = individual_address(rng)
            homes.append(address)
        plan.append(PlannedVote(seq, kind, voter, address, rng.choice(choices)))
    return plan, len(homes)


def wrong_answer(answer: str) -> str:
    """A well-formed answer that is certainly not ``answer``."""
    first = ALPHABET[(ALPHABET.index(answer[0].upper()) + 1) % len(ALPHABET)]
    return first + answer[1:]


# --------------------------------------------------------------------------- bookkeeping


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


def to_micros(seconds: float) -> int:
    """A latency in whole microseconds, clamped to what the histogram tracks."""
    return min(_HIGHEST_US, max(_LOWEST_US, round(seconds * 1_000_000)))


class LatencyBook:
    """Latencies (HdrHistogram, all answered requests) and counts per status and kind."""

    def __init__(self) -> None:
        self.histogram = new_histogram()
        self.statuses: Counter[int] = Counter()
        self.by_kind: Counter[tuple[str, int]] = Counter()
        self.codes: Counter[str] = Counter()

    def record(self, seconds: float, status: int, kind: str = "", code: str | None = None) -> None:
        self.statuses[status] += 1
        self.by_kind[(kind, status)] += 1
        if code:
            self.codes[code] += 1
        if status != NO_ANSWER:
            self.histogram.record_value(to_micros(seconds))

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    @property
    def answered(self) -> int:
        return self.count - self.statuses[NO_ANSWER]

    def errors(self) -> int:
        """Requests that got no answer or a 5xx: the server failed, not the voter."""
        return sum(n for status, n in self.statuses.items() if status == NO_ANSWER or status >= 500)

    def error_fraction(self) -> float:
        return self.errors() / self.count if self.count else 0.0

    def percentiles_ms(self, points: Sequence[float] = PERCENTILES) -> dict[float, float]:
        """Latency at each percentile in milliseconds; empty if nothing was answered."""
        if self.histogram.get_total_count() == 0:
            return {}
        return {p: self.histogram.get_value_at_percentile(p) / 1000 for p in points}

    def max_ms(self) -> float:
        return float(self.histogram.get_max_value()) / 1000

    def merge(self, other: LatencyBook) -> None:
        self.histogram.add(other.histogram)
        self.statuses.update(other.statuses)
        self.by_kind.update(other.by_kind)
        self.codes.update(other.codes)


# --------------------------------------------------------------------------- config, report


CredentialSource = Literal["api", "mint"]


@dataclass(frozen=True)
class LoadConfig:
    base_url: str  # ingest directly (with forwarded_for) or the gateway
    poll_id: str
    rate: float  # votes per second
    count: int | None = None
    duration: float | None = None
    mix: Mix = field(default_factory=Mix)
    choices: tuple[str, ...] = CHOICES
    forwarded_for: bool = True
    sessions: CredentialSource = "api"
    captchas: CredentialSource = "api"
    captcha_secret: str = ""  # to answer captchas (and to mint them)
    voter_token_secret: str = ""  # only to mint sessions
    max_connections: int = 256
    request_timeout: float = 10.0
    setup_concurrency: int = 32
    captcha_lead_seconds: float = 1.0  # captchas fetched this far ahead of their votes
    seed: int | None = None
    path: str = ""  # the vote route; defaults to /api/v1/polls/{poll_id}/votes

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.rate, self.count, self.duration)

    @property
    def vote_path(self) -> str:
        return self.path or f"/api/v1/polls/{self.poll_id}/votes"


@dataclass
class SentVote:
    """One vote of the run, as the client saw it (times in seconds from the start)."""

    seq: int
    kind: Kind
    voter_id: str
    client_ip: str
    intended: float
    sent: float = math.nan
    latency: float = math.nan
    status: int = NO_ANSWER
    vote_id: str | None = None
    code: str | None = None  # the problem's code, or the client's reason for no answer


@dataclass
class LoadReport:
    config: LoadConfig
    started_at: datetime
    elapsed: float  # from the first intended instant to the last answer
    sent: list[SentVote]
    book: LatencyBook
    dispatch_lag: HdrHistogram  # how late the generator itself dispatched each vote
    client_cpu_seconds: float
    connections_opened: int

    @property
    def acknowledged(self) -> list[SentVote]:
        """Votes the service took (202): each must be decided and, if accepted, counted."""
        return [vote for vote in self.sent if vote.status == 202]

    @property
    def refused(self) -> list[SentVote]:
        return [vote for vote in self.sent if vote.status != 202]

    @property
    def offered_rate(self) -> float:
        return self.config.rate

    @property
    def completed_rate(self) -> float:
        return self.book.answered / self.elapsed if self.elapsed > 0 else 0.0

    def dispatch_lag_ms(self, percentile: float = 99.0) -> float:
        if self.dispatch_lag.get_total_count() == 0:
            return 0.0
        return float(self.dispatch_lag.get_value_at_percentile(percentile)) / 1000

    def summary(self) -> dict[str, Any]:
        return {
            "offered_rate": self.offered_rate,
            "completed_rate": round(self.completed_rate, 1),
            "sent": len(self.sent),
            "statuses": dict(sorted(self.book.statuses.items())),
            "codes": dict(self.book.codes),
            "latency_ms": {str(p): v for p, v in self.book.percentiles_ms().items()},
            "max_ms": self.book.max_ms(),
            "error_fraction": self.book.error_fraction(),
            "dispatch_lag_p99_ms": self.dispatch_lag_ms(),
            "client_cpu_seconds": round(self.client_cpu_seconds, 2),
        }


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Voter:
    voter_id: str
    token: str


def setup_addresses() -> Iterator[str]:
    """Addresses for set-up calls, each used a few times: under per-address limits."""
    rng = random.Random()
    while True:
        address = str(SETUP_NETWORK[rng.randrange(SETUP_NETWORK.num_addresses)])
        yield from [address] * 50


class _Client:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.pool = ConnectionPool.for_url(
            config.base_url,
            max_connections=config.max_connections,
            request_timeout=config.request_timeout,
        )
        self.addresses = setup_addresses()

    def headers(self, address: str | None, **extra: str) -> dict[str, str]:
        headers = {"user-agent": USER_AGENT, "content-type": "application/json", **extra}
        if self.config.forwarded_for and address is not None:
            headers["x-forwarded-for"] = address
        return headers

    async def post_json(self, path: str, address: str | None) -> tuple[int, Any]:
        response = await self.pool.request("POST", path, self.headers(address), b"{}")
        return response.status, json.loads(response.body or b"null")

    async def voters(self, n: int) -> list[Voter]:
        if self.config.sessions == "mint":
            tokens = VoterTokens(self.config.voter_token_secret)
            now = datetime.now(UTC)
            return [Voter(t.voter_id, t.token) for t in (tokens.issue(now) for _ in range(n))]
        return await self._sessions_from_api(n)

    async def _sessions_from_api(self, n: int) -> list[Voter]:
        voters: list[Voter] = []
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                status, body = await self.post_json("/api/v1/session", next(self.addresses))
                if status != 201:
                    raise RuntimeError(
                        f"POST /api/v1/session answered {status} {body!r}: with many voters "
                        "through the gateway use sessions='mint' (or call ingest directly "
                        "with forwarded_for)"
                    )
                voters.append(Voter(str(body["voter_id"]), str(body["voter_token"])))

        await asyncio.gather(*(worker() for _ in range(self.config.setup_concurrency)))
        return voters

    async def captcha(self) -> str:
        status, body = await self.post_json("/api/v1/captcha", next(self.addresses))
        if status != 201:
            raise RuntimeError(f"POST /api/v1/captcha answered {status} {body!r}")
        return str(body["captcha_id"])


class _Captchas:
    """Captcha ids for the votes: minted when needed, or fetched just ahead of them."""

    def __init__(self, client: _Client, lead: int) -> None:
        self.client = client
        self.mint = client.config.captchas == "mint"
        self.ready: asyncio.Queue[str] = asyncio.Queue(maxsize=max(1, lead))
        self.tasks: list[asyncio.Task[None]] = []
        self.failures = 0

    def start(self, fetchers: int) -> None:
        if not self.mint:
            self.tasks = [asyncio.create_task(self._fetch_forever()) for _ in range(fetchers)]

    async def _fetch_forever(self) -> None:
        while True:
            try:
                captcha_id = await self.client.captcha()
            except (HttpError, RuntimeError, ValueError):
                self.failures += 1
                await asyncio.sleep(0.05)
                continue
            await self.ready.put(captcha_id)

    async def filled(self, within: float = 30.0) -> None:
        for _ in range(int(within / 0.05)):
            if self.mint or self.ready.full():
                return
            await asyncio.sleep(0.05)

    async def take(self) -> str:
        if self.mint:
            return issue(self.client.config.captcha_secret, datetime.now(UTC))
        return await self.ready.get()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --------------------------------------------------------------------------- the run


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_load(
    config: LoadConfig, stop: asyncio.Event | None = None, started: asyncio.Event | None = None
) -> LoadReport:
    """Send the configured votes on schedule; return every vote's outcome and the stats.

    ``started`` is set when the first vote is due (setup done); when ``stop`` is set, no
    further vote is sent and the report covers the votes sent so far.
    """
    if not config.captcha_secret:
        raise ValueError("captcha_secret is needed to answer captchas")
    if config.sessions == "mint" and not config.voter_token_secret:
        raise ValueError("sessions='mint' needs voter_token_secret")
    rng = random.Random(config.seed)
    schedule = config.schedule
    plan, voter_count = plan_votes(len(schedule), config.mix, rng, config.choices)
    client = _Client(config)
    voters = await client.voters(voter_count)
    lead = math.ceil(config.rate * config.captcha_lead_seconds)
    captchas = _Captchas(client, min(lead, max(1, len(plan))))
    captchas.start(fetchers=min(config.setup_concurrency, max(1, lead)))
    await captchas.filled()

    book = LatencyBook()
    lag = new_histogram()
    sent = [
        SentVote(p.seq, p.kind, voters[p.voter].voter_id, p.address, schedule.intended(p.seq))
        for p in plan
    ]
    # What the run holds (a record per vote, hundreds of thousands) is frozen out of the
    # collector, as the services freeze what they hold at start: in runs of minutes its
    # full collections scanned it all and stopped this loop for 0.4-1.4 s, and the
    # votes due or answered meanwhile were measured as the system's latency.
    with tuned_gc():
        # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
        clock = time.perf_counter
        started_at = datetime.now(UTC)
        cpu_before = _cpu_seconds()
        start = clock() + 0.05
        last_done = start
        if started is not None:
            started.set()

        async def send(planned: PlannedVote, record: SentVote) -> None:
            nonlocal last_done
            record.sent = clock() - start
            lag.record_value(to_micros(max(0.0, record.sent - record.intended)))
            try:
                await _send_vote(client, captchas, planned, voters[planned.voter], record)
            finally:
                done = clock()
                last_done = max(last_done, done)
                record.latency = done - start - record.intended
                book.record(record.latency, record.status, record.kind.value, record.code)

        tasks: set[asyncio.Task[None]] = set()
        dispatched_without_yield = 0
        dispatched = 0
        for planned, record in zip(plan, sent, strict=True):
            if stop is not None and stop.is_set():
                break
            delay = start + record.intended - clock()
            if delay > _MIN_SLEEP:
                await asyncio.sleep(delay)
                dispatched_without_yield = 0
            elif dispatched_without_yield >= _MAX_BATCH:
                # Behind schedule: dispatch what is due in batches, letting requests run.
                await asyncio.sleep(0)
                dispatched_without_yield = 0
            dispatched_without_yield += 1
            dispatched += 1
            task = asyncio.create_task(send(planned, record))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks))
    cpu = _cpu_seconds() - cpu_before
    await captchas.stop()
    await client.pool.close()
    return LoadReport(
        config=config,
        started_at=started_at,
        elapsed=max(0.0, last_done - start),
        sent=sent[:dispatched],
        book=book,
        dispatch_lag=lag,
        client_cpu_seconds=cpu,
        connections_opened=client.pool.opened,
    )


async def _send_vote(
    client: _Client, captchas: _Captchas, planned: PlannedVote, voter: Voter, record: SentVote
) -> None:
    config = client.config
    try:
        captcha_id = await captchas.take()
        answer = expected_answer(config.captcha_secret, captcha_id)
        if planned.kind is Kind.WRONG_CAPTCHA:
            answer = wrong_answer(answer)
        body = json.dumps(
            {"choice": planned.choice, "captcha_id": captcha_id, "captcha_answer": answer}
        ).encode()
        headers = client.headers(planned.address, authorization=f"Bearer {voter.token}")
        response = await client.pool.request("POST", config.vote_path, headers, body)
    except HttpError as exc:
        record.code = f"no_answer: {exc}"[:200]
        return
    record.status = response.status
    try:
        answer_body = json.loads(response.body) if response.body else {}
    except ValueError:
        answer_body = {}
    if not isinstance(answer_body, dict):
        return
    if response.status == 202:
        record.vote_id = answer_body.get("vote_id")
    else:
        record.code = answer_body.get("code")
