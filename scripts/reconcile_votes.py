"""Exact reconciliation of a load run with the pipeline's sources of truth.

Given every vote a load run sent (its HTTP answer, its voter) and what the system holds
for that run's voters, say which acknowledged votes were lost, which were counted twice,
and which refused votes were stored anyway. The checks read the sources of truth
directly, never a metric:

    votes.submitted                 what ingest stored (Kafka, acks=all)
    antifraud.decisions             one decision per vote id
    votes.accepted / votes.rejected the decisions as published (duplicates allowed)
    tally.counted_votes, tally.counts   what was counted, and the live totals
    lottery.voter_days              the days each voter voted, for the draw

How a vote's HTTP answer is read:

    202                             acknowledged: must be decided exactly once, and if
                                    accepted, counted and recorded in days-voted once
    503 broker_unavailable          refused by ingest: the contract says nothing stored
    4xx                             refused at the edge: nothing stored
    no answer, other 5xx            unknown: the gateway's 503 service_unavailable (the
                                    upstream failed mid-request), a reset, a timeout; it
                                    may or may not have been stored, so it is reported,
                                    and if it was stored it must be handled like any vote

`reconcile()` is pure (no I/O); `gather_evidence()` reads Postgres and Kafka;
`wait_drained()` waits until every consumer group has committed the end of its topic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.drain import PipelineProbe
from shared.events import TOPIC_ACCEPTED, TOPIC_REJECTED, TOPIC_SUBMITTED

# Every consumer group of the pipeline and the topic it reads.
PIPELINE_GROUPS: tuple[tuple[str, str], ...] = (
    ("antifraud", TOPIC_SUBMITTED),
    ("tally", TOPIC_ACCEPTED),
    ("lottery", TOPIC_ACCEPTED),
)
RATE_LIMITED = frozenset({"rate_limited_ip", "rate_limited_subnet", "rate_limited_voter"})


class Answer(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    REFUSED = "refused"
    UNKNOWN = "unknown"


def classify(status: int, code: str | None) -> Answer:
    """What a vote's HTTP answer promises about whether it was stored."""
    if status == 202:
        return Answer.ACKNOWLEDGED
    if status == 503 and code == "broker_unavailable":
        return Answer.REFUSED
    if status == 0 or status >= 500:
        return Answer.UNKNOWN
    return Answer.REFUSED


@dataclass(frozen=True)
class SentVote:
    """One vote as the client saw it; `kind` is the load generator's (valid, repeat...)."""

    voter_id: str
    kind: str
    status: int
    code: str | None = None
    vote_id: str | None = None

    @property
    def answer(self) -> Answer:
        return classify(self.status, self.code)


@dataclass(frozen=True)
class Decided:
    """A row of antifraud.decisions."""

    voter_id: str
    verdict: str
    reason: str | None
    choice: str
    day: date | None


@dataclass
class Evidence:
    """What the sources of truth hold for one run's voters."""

    decisions: dict[str, Decided] = field(default_factory=dict)
    submitted: Counter[str] = field(default_factory=Counter)  # vote_id -> records
    submitted_voter: dict[str, str] = field(default_factory=dict)
    accepted_topic: Counter[str] = field(default_factory=Counter)
    rejected_topic: Counter[str] = field(default_factory=Counter)
    counted: set[str] = field(default_factory=set)  # ids in tally.counted_votes
    counts_before: dict[str, int] = field(default_factory=dict)  # tally.counts, per choice
    counts_after: dict[str, int] = field(default_factory=dict)
    days: dict[tuple[str, date], str] = field(default_factory=dict)  # (voter, day) -> vote


@dataclass(frozen=True)
class Problem:
    vote_id: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.vote_id or '-'}: {self.what}"


@dataclass
class Reconciliation:
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    unknown: int = 0
    unknown_stored: int = 0  # unknown answers whose vote exists after all
    decided: int = 0  # acknowledged votes with a decision
    accepted: int = 0  # every stored vote of the run decided accepted
    rejected: int = 0
    counted: int = 0  # accepted votes in tally.counted_votes
    days_recorded: int = 0  # accepted votes with their days-voted row
    topic_duplicates: int = 0  # extra copies of a decision on the topics (allowed)
    lost_problems: list[Problem] = field(default_factory=list)
    duplicate_problems: list[Problem] = field(default_factory=list)
    phantom_problems: list[Problem] = field(default_factory=list)
    misjudged_problems: list[Problem] = field(default_factory=list)
    counts_short: int = 0
    counts_excess: int = 0

    @property
    def lost(self) -> int:
        ids = {p.vote_id for p in self.lost_problems if p.vote_id is not None}
        return max(len(ids), self.counts_short)

    @property
    def duplicated(self) -> int:
        ids = {p.vote_id for p in self.duplicate_problems if p.vote_id is not None}
        return max(len(ids), self.counts_excess)

    @property
    def phantom(self) -> int:
        return len(self.phantom_problems)

    @property
    def misjudged(self) -> int:
        return len(self.misjudged_problems)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.phantom == 0 and not self.misjudged

    def problems(self) -> list[str]:
        groups = (
            ("lost", self.lost_problems),
            ("duplicated", self.duplicate_problems),
            ("stored though refused", self.phantom_problems),
            ("misjudged", self.misjudged_problems),
        )
        return [f"{label}: {problem}" for label, found in groups for problem in found]


def reconcile(sent: Sequence[SentVote], evidence: Evidence) -> Reconciliation:
    """Check the run's votes against the evidence; every discrepancy is a Problem."""
    result = Reconciliation(sent=len(sent))
    answers = Counter(vote.answer for vote in sent)
    result.acknowledged = answers[Answer.ACKNOWLEDGED]
    result.refused = answers[Answer.REFUSED]
    result.unknown = answers[Answer.UNKNOWN]
    acked = {vote.vote_id for vote in sent if vote.answer is Answer.ACKNOWLEDGED and vote.vote_id}
    stored = _stored_votes(sent, evidence, acked, result)
    result.decided = len(acked & evidence.decisions.keys())
    for vote_id in sorted(stored):
        _check_decision(vote_id, vote_id in acked, evidence, result)
    _check_counts(stored, evidence, result)
    _check_days(sent, stored, evidence, result)
    _check_judgement(sent, evidence, result)
    result.topic_duplicates = sum(
        n - 1
        for topic in (evidence.accepted_topic, evidence.rejected_topic)
        for n in topic.values()
    )
    return result


def _stored_votes(
    sent: Sequence[SentVote], evidence: Evidence, acked: set[str], result: Reconciliation
) -> set[str]:
    """Acknowledged votes plus the run's other votes found stored, each one attributed.

    A stored vote nobody was told about belongs to one of its voter's votes without an
    id: an unknown answer may explain it; a refusal (503 broker_unavailable) may not.
    """
    voter_of = {**evidence.submitted_voter}
    voter_of.update({vote_id: d.voter_id for vote_id, d in evidence.decisions.items()})
    unexplained: dict[str, list[str]] = defaultdict(list)
    for vote_id in sorted(voter_of.keys() - acked):
        unexplained[voter_of[vote_id]].append(vote_id)
    unknown_per_voter = Counter(vote.voter_id for vote in sent if vote.answer is Answer.UNKNOWN)
    for voter, extras in unexplained.items():
        explained = min(len(extras), unknown_per_voter[voter])
        result.unknown_stored += explained
        for vote_id in extras[explained:]:
            result.phantom_problems.append(
                Problem(vote_id, f"stored for voter {voter}, who got no 202 for it")
            )
    return acked | voter_of.keys()


def _check_decision(
    vote_id: str, acknowledged: bool, evidence: Evidence, result: Reconciliation
) -> None:
    decided = evidence.decisions.get(vote_id)
    if decided is None:
        where = "on votes.submitted" if vote_id in evidence.submitted else "not on votes.submitted"
        label = "acknowledged" if acknowledged else "stored"
        result.lost_problems.append(Problem(vote_id, f"{label}, never decided ({where})"))
        return
    on_accepted = evidence.accepted_topic[vote_id]
    on_rejected = evidence.rejected_topic[vote_id]
    if decided.verdict == "accepted":
        result.accepted += 1
        if not on_accepted:
            result.lost_problems.append(Problem(vote_id, "accepted, not on votes.accepted"))
        if vote_id in evidence.counted:
            result.counted += 1
        else:
            result.lost_problems.append(Problem(vote_id, "accepted, not counted"))
    else:
        result.rejected += 1
        if not on_rejected:
            result.lost_problems.append(Problem(vote_id, "rejected, not on votes.rejected"))
        if vote_id in evidence.counted:
            result.duplicate_problems.append(Problem(vote_id, "rejected, counted anyway"))
    if on_accepted and on_rejected:
        result.duplicate_problems.append(
            Problem(vote_id, f"published both accepted and rejected (decision: {decided.verdict})")
        )


def _check_counts(stored: set[str], evidence: Evidence, result: Reconciliation) -> None:
    """The live totals moved by exactly the run's accepted votes, option by option."""
    expected = Counter(
        d.choice
        for vote_id, d in evidence.decisions.items()
        if vote_id in stored and d.verdict == "accepted"
    )
    choices = expected.keys() | evidence.counts_after.keys() | evidence.counts_before.keys()
    for choice in sorted(choices):
        moved = evidence.counts_after.get(choice, 0) - evidence.counts_before.get(choice, 0)
        if moved < expected[choice]:
            result.counts_short += expected[choice] - moved
            result.lost_problems.append(
                Problem(None, f"tally.counts[{choice}] moved {moved}, expected {expected[choice]}")
            )
        elif moved > expected[choice]:
            result.counts_excess += moved - expected[choice]
            result.duplicate_problems.append(
                Problem(None, f"tally.counts[{choice}] moved {moved}, expected {expected[choice]}")
            )
    for vote_id in sorted(evidence.counted - stored):
        result.duplicate_problems.append(Problem(vote_id, "counted, but not a vote of this run"))


def _check_days(
    sent: Sequence[SentVote], stored: set[str], evidence: Evidence, result: Reconciliation
) -> None:
    """Each accepted vote is the one days-voted row of its (voter, day), and no row is extra."""
    accepted = {
        vote_id: d
        for vote_id, d in evidence.decisions.items()
        if vote_id in stored and d.verdict == "accepted"
    }
    expected_rows: dict[tuple[str, date], str] = {}
    for vote_id, d in sorted(accepted.items()):
        if d.day is None:
            result.lost_problems.append(Problem(vote_id, "accepted without a day"))
            continue
        row = evidence.days.get((d.voter_id, d.day))
        if row == vote_id:
            result.days_recorded += 1
        elif row is None:
            result.lost_problems.append(Problem(vote_id, f"accepted, no days-voted row {d.day}"))
        else:
            result.lost_problems.append(
                Problem(vote_id, f"accepted, but days-voted {d.day} names vote {row}")
            )
        if (d.voter_id, d.day) in expected_rows:
            other = expected_rows[(d.voter_id, d.day)]
            result.duplicate_problems.append(
                Problem(vote_id, f"a second accepted vote on {d.day} (first: {other})")
            )
        expected_rows.setdefault((d.voter_id, d.day), vote_id)
    for key, vote_id in sorted(evidence.days.items()):
        if key not in expected_rows:
            result.duplicate_problems.append(
                Problem(vote_id, f"days-voted row {key[1]} for a vote not accepted in this run")
            )


def _check_judgement(sent: Sequence[SentVote], evidence: Evidence, result: Reconciliation) -> None:
    """Faults must not change verdicts: a fresh valid vote is accepted, a wrong answer is not.

    Rate limits may reject anything, and a fresh voter's vote may lose the daily limit to
    the same voter's repeat when the two arrived out of order (the repeat then stands).
    """
    accepted_days = {
        (d.voter_id, d.day) for d in evidence.decisions.values() if d.verdict == "accepted"
    }
    for vote in sent:
        decided = evidence.decisions.get(vote.vote_id or "")
        if decided is None:
            continue
        if vote.kind == "wrong_captcha" and decided.verdict == "accepted":
            result.misjudged_problems.append(Problem(vote.vote_id, "wrong captcha accepted"))
        if vote.kind != "valid" or decided.verdict == "accepted":
            continue
        if decided.reason in RATE_LIMITED:
            continue
        if decided.reason == "daily_limit" and (vote.voter_id, decided.day) in accepted_days:
            continue
        result.misjudged_problems.append(
            Problem(vote.vote_id, f"valid vote rejected: {decided.reason}")
        )


# --------------------------------------------------------------------------- reading


async def read_counts(conn: asyncpg.Connection, poll_id: str) -> dict[str, int]:
    rows = await conn.fetch("SELECT choice, n FROM tally.counts WHERE poll_id = $1", poll_id)
    return {str(row["choice"]): int(row["n"]) for row in rows}


async def read_database(
    conn: asyncpg.Connection,
    poll_id: str,
    voters: Sequence[str],
    vote_ids: Iterable[str],
    evidence: Evidence,
) -> None:
    """Decisions, counted votes, totals and days-voted rows for the run's voters."""
    rows = await conn.fetch(
        "SELECT vote_id, voter_id, verdict, reason, choice, day"
        " FROM antifraud.decisions WHERE voter_id = ANY($1::text[])",
        list(voters),
    )
    for row in rows:
        evidence.decisions[str(row["vote_id"])] = Decided(
            str(row["voter_id"]), str(row["verdict"]), row["reason"], str(row["choice"]), row["day"]
        )
    ids = sorted({*vote_ids, *evidence.decisions, *evidence.submitted})
    counted = await conn.fetch(
        "SELECT vote_id FROM tally.counted_votes WHERE vote_id = ANY($1::text[])", ids
    )
    evidence.counted = {str(row["vote_id"]) for row in counted}
    evidence.counts_after = await read_counts(conn, poll_id)
    days = await conn.fetch(
        "SELECT voter_id, day, vote_id FROM lottery.voter_days"
        " WHERE poll_id = $1 AND voter_id = ANY($2::text[])",
        poll_id,
        list(voters),
    )
    evidence.days = {(str(r["voter_id"]), r["day"]): str(r["vote_id"]) for r in days}


async def read_topic(
    bootstrap: str, topic: str, voters: set[str], within: float = 60.0
) -> list[dict[str, object]]:
    """Every record of `topic` (from the start to the current end) keyed by one of `voters`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[dict[str, object]] = []
        deadline = time.monotonic() + within
        while not await _at_end(consumer, ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {within:.0f} s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key.decode() in voters:
                        found.append(json.loads(record.value))
        return found
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, ends: Mapping[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(20):
        # Metadata of a topic the consumer is not subscribed to must be asked for.
        await consumer._client.force_metadata_update()
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return set(ids)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"topic {topic} has no partitions")


async def read_topics(bootstrap: str, voters: Sequence[str], evidence: Evidence) -> None:
    wanted = set(voters)
    for record in await read_topic(bootstrap, TOPIC_SUBMITTED, wanted):
        vote_id = str(record["vote_id"])
        evidence.submitted[vote_id] += 1
        evidence.submitted_voter[vote_id] = str(record["voter_id"])
    for record in await read_topic(bootstrap, TOPIC_ACCEPTED, wanted):
        evidence.accepted_topic[str(record["vote_id"])] += 1
    for record in await read_topic(bootstrap, TOPIC_REJECTED, wanted):
        evidence.rejected_topic[str(record["vote_id"])] += 1


async def gather_evidence(
    database_url: str,
    bootstrap: str,
    poll_id: str,
    sent: Sequence[SentVote],
    counts_before: Mapping[str, int],
) -> Evidence:
    """Everything the sources of truth hold for the voters of `sent`."""
    evidence = Evidence(counts_before=dict(counts_before))
    voters = sorted({vote.voter_id for vote in sent})
    await read_topics(bootstrap, voters, evidence)
    conn = await asyncpg.connect(database_url)
    try:
        vote_ids = [vote.vote_id for vote in sent if vote.vote_id]
        await read_database(conn, poll_id, voters, vote_ids, evidence)
    finally:
        await conn.close()
    return evidence


# --------------------------------------------------------------------------- draining


@dataclass
class Drain:
    drained: bool
    seconds: float
    lag: dict[str, int]
    error: str | None = None  # the last failure to read the lag, if the last try failed


async def wait_drained(
    bootstrap: str, within: float = 300.0, *, stable_checks: int = 3, interval: float = 1.0
) -> Drain:
    """Wait until every group has committed its topic's end, `stable_checks` times in a row.

    Committed offsets, not table contents: a consumer commits only after its database
    commit, so a zero lag means every record reached its store. Errors while the broker
    recovers count as "not drained yet".
    """
    started = time.monotonic()
    drain = Drain(False, 0.0, {})
    streak = 0
    while time.monotonic() - started < within:
        try:
            drain.lag, drain.error = await _lag_once(bootstrap), None
        except Exception as exc:  # a broker coming back refuses or times out: retry
            drain.error, streak = f"{type(exc).__name__}: {exc}", 0
        else:
            streak = streak + 1 if not any(drain.lag.values()) else 0
            if streak >= stable_checks:
                drain.drained = True
                break
        await asyncio.sleep(interval)
    drain.seconds = time.monotonic() - started
    return drain


async def _lag_once(bootstrap: str) -> dict[str, int]:
    probe = PipelineProbe({"bootstrap_servers": bootstrap})
    await probe.start()
    try:
        return await asyncio.wait_for(probe.total_lag(list(PIPELINE_GROUPS)), timeout=15)
    finally:
        await probe.stop()
