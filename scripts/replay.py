"""Campaign replay (`make replay`): the rehearsal staff run before a real close.

It plays the campaign of ORIGIN.md - thousands of people voting over its twenty days
with realistic habits, honest mistakes, fraud and prize-draw entries - through the real
stack, then closes, draws, prints the winners (masked), the days histogram and the fraud
refused by reason, and re-checks the draw with the project's verifier. Exit status 0
when every check holds, 1 when one fails (the verifier's among them), 2 when it cannot
run.

Compressing twenty days into minutes, honestly
----------------------------------------------
The campaign's days lie in the past, while the edge stamps `received_at` with its own
clock and refuses a closed poll; and a voting day is a calendar day in the poll's time
zone, which no choice of zone can shorten. Every judgement that matters for the draw is
made on `received_at`, not on processing time (contract section 6), so the replay feeds
the pipeline the events the edge would have written on those days:

- Real: Kafka, PostgreSQL, the gateway and all four services, unchanged; antifraud
  judging captchas, rate limits and the daily limit; tally counting; the lottery
  recording days, taking entries, fixing and publishing its commitment, refusing the
  draw while voting is open, during the close's grace and while votes from before the
  close are still in the pipeline, then drawing once; the public audit record and
  `python -m services.lottery.verify`.
  Entries, the closing minutes' votes, the draw and every read go through the gateway.
- Simulated: the voters. Campaign-dated `VoteSubmitted` events go straight to
  `votes.submitted`, written as the edge writes them (key = voter id, acks=all), with
  captchas issued at the campaign instant and answered from `CAPTCHA_SECRET` through
  `shared.captcha` (the contract's API for rehearsals). Device identities are voter
  tokens minted with `VOTER_TOKEN_SECRET`, the same tokens `POST /api/v1/session`
  issues. What is not exercised for those events is the edge's own work (token check,
  body validation, `X-Forwarded-For`), which the live votes do go through.
- The rehearsal poll: a copy of the campaign poll with the id
  `futian-culture-2021-replay-<run>`, added to the stack's catalog; the services read
  the catalog at start, so the replay rolls them through the runner's control socket,
  as a catalog change is deployed. Besides the id and a rehearsal mark in the title and
  summary, one field changes: `closes_at`, `--lead` seconds from now (60 by default),
  so that entries are taken while voting is really open and the close, its grace and
  the draw really happen. Votes keep their campaign
  dates, so days, the daily limit and the weights are the campaign's. The closing
  morning is played live: a few of its voters vote through the gateway in the
  rehearsal's last minute instead (their day is today's date, one day for one), one
  vote comes too late, and one entry comes too late.

Side effects: the stack's catalog keeps the rehearsal poll (a `make replay` stack is
wiped by the next run); decision-delay histograms measure from campaign-dated
`received_at` and mean nothing on a replay stack; the staff audit log records the
rehearsal's draw calls under the staff token's name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from scripts.replay_campaign import (
    ACCEPTED,
    CAMPAIGN_OPENS,
    CST,
    Campaign,
    EntryForm,
    PlannedVote,
    RateLimits,
    plan_campaign,
)
from scripts.replay_report import Report, n, summary
from scripts.replay_stack import (
    REPO,
    Decision,
    ReplayError,
    add_poll,
    campaign_poll,
    publish,
    read_decisions,
    roll_services,
)
from shared.auth import VoterTokens
from shared.captcha import ALPHABET, expected_answer, issue
from shared.catalog import CLOSE_GRACE, Poll, parse_catalog
from shared.events import VoteSubmitted

PROTOTYPE = "futian-culture-2021"
ENTRY_CONCURRENCY = 16
LIVE_MARGIN = 6.0  # the last live vote is sent this long before the close
EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2

Say = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StackEnv:
    """The stack the replay drives, as `python -m scripts.stack exec|test` describe it."""

    gateway_url: str
    kafka_bootstrap: str
    captcha_secret: str
    voter_token_secret: str
    staff_token: str
    polls_file: Path
    run_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackEnv:
        names = (
            "GATEWAY_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
            "CAPTCHA_SECRET",
            "VOTER_TOKEN_SECRET",
            "STAFF_TOKEN",
            "POLLS_FILE",
            "STACK_RUN_DIR",
        )
        missing = [name for name in names if not env.get(name)]
        if missing:
            raise ReplayError(
                f"{', '.join(missing)} not set: run the replay with `make replay`, which "
                "starts a stack of its own and passes its addresses and secrets"
            )
        return cls(
            gateway_url=env["GATEWAY_URL"].rstrip("/"),
            kafka_bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"],
            captcha_secret=env["CAPTCHA_SECRET"],
            voter_token_secret=env["VOTER_TOKEN_SECRET"],
            staff_token=env["STAFF_TOKEN"],
            polls_file=Path(env["POLLS_FILE"]),
            run_dir=Path(env["STACK_RUN_DIR"]),
        )


@dataclass(frozen=True)
class ReplayConfig:
    voters: int = 4_000
    seed: int = 2022
    lead: float = 60.0  # seconds from adding the poll to its close
    live_votes: int = 24
    external_entropy: str = ""
    draw_timeout: float = 180.0
    run_id: str = ""


# --------------------------------------------------------------------------- helpers


def _cst(instant: datetime) -> str:
    return instant.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S +08:00")


def _problem_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return ""


def _run_id(now: datetime) -> str:
    return now.strftime("%Y%m%d-%H%M%S")


def _rehearsal_poll(
    prototype: Mapping[str, Any], poll_id: str, closes_at: datetime
) -> dict[str, Any]:
    summary = str(prototype.get("summary", ""))
    note = (
        "**演练 / Rehearsal** - 这是活动回放，并非真实投票。"
        "This is a campaign replay, not a real vote.\n\n"
    )
    return {
        **prototype,
        "id": poll_id,
        "title": f"{prototype['title']} (演练 rehearsal)",
        "summary": note + summary,
        "closes_at": closes_at.astimezone(CST).isoformat(),
    }


def _limits(poll: Poll) -> RateLimits:
    rules = poll.rate_limits
    return RateLimits(rules.window_seconds, rules.per_voter, rules.per_ip)


def _wrong(answer: str) -> str:
    """An answer that is surely not the right one: its first character moved on by one."""
    return ALPHABET[(ALPHABET.index(answer[0]) + 1) % len(ALPHABET)] + answer[1:]


def campaign_events(campaign: Campaign, poll_id: str, secret: str) -> Iterator[VoteSubmitted]:
    """The pre-stamped votes as the edge would have written them, in received order."""
    captchas: dict[str, str] = {}
    for vote in campaign.stamped:
        voter = campaign.voters[vote.voter]
        if vote.reuse_of is not None:
            captcha_id = captchas[vote.reuse_of]
        else:
            captcha_id = issue(secret, vote.captcha_issued_at)
        captchas[vote.vote_id] = captcha_id
        answer = expected_answer(secret, captcha_id)
        yield VoteSubmitted(
            vote_id=vote.vote_id,
            poll_id=poll_id,
            choice=vote.choice,
            voter_id=voter.voter_id,
            captcha_id=captcha_id,
            captcha_answer=answer if vote.answer == "right" else _wrong(answer),
            received_at=vote.received_at,
            client_ip=voter.address,
            user_agent=voter.user_agent,
        )


# --------------------------------------------------------------------------- the phases


class Replay:
    def __init__(self, env: StackEnv, config: ReplayConfig, say: Say) -> None:
        self.env = env
        self.config = config
        self.say = say
        now = datetime.now(UTC)
        self.poll_id = f"{PROTOTYPE}-replay-{config.run_id or _run_id(now)}"
        self.report = Report(self.poll_id)
        self.tokens = VoterTokens(env.voter_token_secret)
        self.minted: dict[str, str] = {}  # voter id -> token
        self.staff = {"Authorization": f"Bearer {env.staff_token}"}
        self.live_ids: dict[str, str] = {}  # planned vote id -> the id the edge gave it
        self.closes_at = now  # set when the poll is added
        self.weights: dict[str, int] = {}  # entry id -> days, from the audit record

    def mint(self) -> str:
        issued = self.tokens.issue(datetime.now(UTC))
        self.minted[issued.voter_id] = issued.token
        return issued.voter_id

    def bearer(self, voter_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.minted[voter_id]}"}

    @property
    def base(self) -> str:
        return f"/api/v1/polls/{self.poll_id}"

    # ---- plan and catalog

    def plan(self, prototype: Poll) -> Campaign:
        started = time.monotonic()
        campaign = plan_campaign(
            self.config.voters,
            seed=self.config.seed,
            limits=_limits(prototype),
            mint=self.mint,
            live_votes=self.config.live_votes,
            live_day=datetime.now(prototype.zone).date(),
        )
        fraud = [v for v in campaign.fraud() if v.expected != ACCEPTED]
        self.report.fraud_planned = len(fraud)
        scripted = sum(1 for v in campaign.voters if v.habit == "script")
        self.say(
            f"plan       {n(self.config.voters)} people on {n(len(campaign.voters) - scripted)} "
            f"devices, {n(scripted)} scripted device ids, over 2021-12-20..2022-01-08: "
            f"{n(len(campaign.votes))} votes, {n(len(fraud))} of them fraud, "
            f"{n(len(campaign.forms))} entry forms (seed {self.config.seed}, "
            f"{time.monotonic() - started:.1f} s)"
        )
        return campaign

    async def install(self, prototype: dict[str, Any]) -> None:
        self.closes_at = datetime.now(UTC) + timedelta(seconds=self.config.lead)
        add_poll(self.env.polls_file, _rehearsal_poll(prototype, self.poll_id, self.closes_at))
        took = await roll_services(self.env.run_dir)
        self.say(
            f"catalog    {self.poll_id} added (votes from {_cst(CAMPAIGN_OPENS)}, closes "
            f"{_cst(self.closes_at)}); services rolled in {took:.1f} s"
        )

    async def await_poll(self, http: httpx.AsyncClient) -> None:
        """Until the gateway serves the poll and the lottery has published its commitment."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                shown = await http.get(self.base)
                lottery = await http.get(f"{self.base}/lottery")
                if shown.status_code == 200 and lottery.status_code == 200:
                    commitment = lottery.json().get("commitment")
                    if commitment:
                        self.report.commitment = str(commitment)
                        self.say(f"commitment {commitment} (published before the first vote)")
                        return
            await asyncio.sleep(0.5)
        raise ReplayError(f"the gateway did not serve {self.poll_id} with a commitment in 60 s")

    # ---- entries

    async def enter(self, http: httpx.AsyncClient, campaign: Campaign) -> None:
        started = time.monotonic()
        slots = asyncio.Semaphore(ENTRY_CONCURRENCY)
        answers: list[tuple[EntryForm, int, str, str]] = []

        async def send(form: EntryForm) -> None:
            voter = campaign.voters[form.voter].voter_id
            async with slots:
                response = await http.post(
                    f"{self.base}/lottery/entry",
                    json={"name": form.name, "phone": form.phone},
                    headers=self.bearer(voter),
                )
            entry_id = response.json().get("entry_id", "") if response.status_code < 300 else ""
            answers.append((form, response.status_code, _problem_code(response), entry_id))

        # A corrected form follows its refused one, so the two go in order per voter.
        by_voter: dict[int, list[EntryForm]] = {}
        for form in campaign.forms:
            by_voter.setdefault(form.voter, []).append(form)

        async def send_all(forms: list[EntryForm]) -> None:
            for form in forms:
                await send(form)

        await asyncio.gather(*(send_all(forms) for forms in by_voter.values()))
        self._judge_entries(answers)
        refused = sum(1 for _, status, _, _ in answers if status == 422)
        entries = len({e for f, s, _, e in answers if s in (200, 201)})
        self.say(
            f"entries    {n(len(answers))} forms: {n(entries)} entries, {n(refused)} refused "
            f"as not a mobile number and corrected ({time.monotonic() - started:.1f} s)"
        )
        if datetime.now(UTC) >= self.closes_at:
            raise ReplayError("the rehearsal closed before its entries were in: raise --lead")

    def _judge_entries(self, answers: list[tuple[EntryForm, int, str, str]]) -> None:
        wrong = [
            f"{status} {code}"
            for form, status, code, _ in answers
            if (form.typo and (status, code) != (422, "invalid_phone"))
            or (not form.typo and status != 201)
        ]
        self.report.check(
            not wrong, f"entries: {len(wrong)} forms answered unexpectedly, e.g. {wrong[:3]}"
        )
        by_person: dict[int, set[str]] = {}
        for form, status, _, entry_id in answers:
            if status == 201:
                by_person.setdefault(form.person, set()).add(entry_id)
        split = sum(1 for ids in by_person.values() if len(ids) != 1)
        self.report.check(
            split == 0, f"entries: {split} numbers registered from two devices are two entries"
        )

    # ---- votes

    async def publish(self, campaign: Campaign) -> None:
        started = time.monotonic()
        sent = await publish(
            self.env.kafka_bootstrap,
            campaign_events(campaign, self.poll_id, self.env.captcha_secret),
        )
        self.say(
            f"votes      {n(sent)} campaign-dated votes written to votes.submitted "
            f"({time.monotonic() - started:.1f} s)"
        )

    async def live(self, http: httpx.AsyncClient, campaign: Campaign) -> None:
        """The closing minutes through the gateway: votes, a premature draw, latecomers."""
        early = await http.post(f"{self.base}/lottery/draw", headers=self.staff)
        self.report.check(
            (early.status_code, _problem_code(early)) == (409, "poll_open"),
            f"a draw before the close answered {early.status_code} {_problem_code(early)}",
        )
        votes = campaign.live
        room = (self.closes_at - datetime.now(UTC)).total_seconds() - LIVE_MARGIN
        if room <= 0:
            raise ReplayError("the rehearsal closed before its closing minutes: raise --lead")
        spacing = room / max(1, len(votes))
        self.say(
            f"live       {len(votes)} closing-morning votes through the gateway, one every "
            f"{spacing:.1f} s until {_cst(self.closes_at)[11:19]}; a draw now: "
            f"{early.status_code} {_problem_code(early)}"
        )
        statuses: Counter[int] = Counter()
        for vote in votes:
            tick = time.monotonic()
            statuses[await self.vote_live(http, campaign, vote)] += 1
            await asyncio.sleep(max(0.0, spacing - (time.monotonic() - tick)))
        self.report.check(
            statuses == Counter({202: len(votes)}), f"live votes answered {dict(statuses)}"
        )
        await self.latecomers(http, campaign)

    async def vote_live(
        self, http: httpx.AsyncClient, campaign: Campaign, vote: PlannedVote
    ) -> int:
        voter = campaign.voters[vote.voter].voter_id
        captcha = await http.post("/api/v1/captcha")
        if captcha.status_code != 201:
            return captcha.status_code
        captcha_id = str(captcha.json()["captcha_id"])
        response = await http.post(
            f"{self.base}/votes",
            json={
                "choice": vote.choice,
                "captcha_id": captcha_id,
                "captcha_answer": expected_answer(self.env.captcha_secret, captcha_id),
            },
            headers=self.bearer(voter),
        )
        if response.status_code == 202:
            self.live_ids[vote.vote_id] = str(response.json()["vote_id"])
        return response.status_code

    async def latecomers(self, http: httpx.AsyncClient, campaign: Campaign) -> None:
        """One vote and one entry arrive just after the close: both refused."""
        latecomer = self.mint()
        captcha_id = str((await http.post("/api/v1/captcha")).json()["captcha_id"])
        await _sleep_until(self.closes_at + timedelta(milliseconds=200))
        late_vote = await http.post(
            f"{self.base}/votes",
            json={
                "choice": "excellent",
                "captcha_id": captcha_id,
                "captcha_answer": expected_answer(self.env.captcha_secret, captcha_id),
            },
            headers=self.bearer(latecomer),
        )
        late_entry = await http.post(
            f"{self.base}/lottery/entry",
            json={"name": "迟到者", "phone": "13900001111"},
            headers=self.bearer(latecomer),
        )
        for what, response in (("vote", late_vote), ("entry", late_entry)):
            self.report.check(
                (response.status_code, _problem_code(response)) == (403, "poll_closed"),
                f"a {what} after the close answered {response.status_code} "
                f"{_problem_code(response)}",
            )
        self.say(
            f"closed     at {_cst(self.closes_at)[11:19]}: a vote just after it "
            f"{late_vote.status_code} {_problem_code(late_vote)}, an entry "
            f"{late_entry.status_code} {_problem_code(late_entry)}"
        )

    # ---- the draw

    async def draw(self, http: httpx.AsyncClient) -> str:
        """The draw through the staff endpoint, retried while the lottery says to wait."""
        await _sleep_until(self.closes_at + CLOSE_GRACE)
        started = time.monotonic()
        body = {"external_entropy": self.config.external_entropy}
        seen: Counter[str] = Counter()
        last_left: Any = None
        while True:
            response = await http.post(
                f"{self.base}/lottery/draw",
                json=body if self.config.external_entropy else None,
                headers=self.staff,
            )
            if response.status_code in (200, 201):
                break
            code = _problem_code(response)
            if response.status_code != 409 or code not in ("poll_settling", "pipeline_not_drained"):
                raise ReplayError(f"the draw answered {response.status_code} {response.text}")
            seen[code] += 1
            last_left = response.json().get("left", last_left)
            if time.monotonic() - started > self.config.draw_timeout:
                raise ReplayError(f"the pipeline did not drain in {self.config.draw_timeout:.0f} s")
            await asyncio.sleep(1.0)
        waited = ", ".join(f"{times}x {code}" for code, times in seen.items()) or "none"
        left = f" (the last said left: {last_left})" if last_left else ""
        self.say(
            f"draw       {response.status_code} after {time.monotonic() - started:.1f} s; "
            f"refusals while waiting: {waited}{left}"
        )
        again = await http.post(f"{self.base}/lottery/draw", headers=self.staff)
        self.report.check(
            again.status_code == 200 and again.text == response.text,
            f"drawing again answered {again.status_code}, not the same draw (200)",
        )
        return response.text

    # ---- reading back and checking

    async def decisions(self, campaign: Campaign) -> dict[str, Decision]:
        planned = {v.vote_id for v in campaign.stamped} | set(self.live_ids.values())
        found = await read_decisions(self.env.kafka_bootstrap, self.poll_id, planned)
        missing = planned - found.keys()
        self.report.check(not missing, f"{len(missing)} votes were never decided")
        return found

    def judge(self, campaign: Campaign, found: Mapping[str, Decision]) -> None:
        """Each vote's verdict against the plan; the refusals by reason and by kind."""
        wrong: list[str] = []
        burst: Counter[str] = Counter()
        for vote in campaign.votes:
            decided = found.get(self.live_ids.get(vote.vote_id, vote.vote_id))
            if decided is None:
                continue
            if decided.verdict != ACCEPTED:
                self.report.rejected[decided.verdict] += 1
                self.report.rejected_by_kind[(decided.verdict, vote.kind)] += 1
            if vote.expected is None:
                burst[decided.verdict] += 1
            elif decided.verdict != vote.expected:
                wrong.append(f"{vote.kind} {vote.vote_id}: {decided.verdict}, not {vote.expected}")
        self.report.check(not wrong, f"{len(wrong)} votes judged against the plan: {wrong[:5]}")
        self.report.check(
            burst == campaign.burst_expected,
            f"the burst was judged {dict(burst)}, not {dict(campaign.burst_expected)}",
        )
        fraud = [v for v in campaign.fraud() if v.expected != ACCEPTED]
        self.report.fraud_rejected = sum(
            1 for v in fraud if (d := found.get(v.vote_id)) is not None and d.verdict != ACCEPTED
        )

    async def results(self, http: httpx.AsyncClient, found: Mapping[str, Decision]) -> None:
        """Tally's final count, once it has counted every accepted vote."""
        accepted = Counter(d.choice for d in found.values() if d.verdict == ACCEPTED)
        deadline = time.monotonic() + 30
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = (await http.get(f"{self.base}/results")).json()
            if doc.get("final") and doc.get("total") == sum(accepted.values()):
                break
            await asyncio.sleep(0.5)
        counts = {k: int(v) for k, v in doc.get("counts", {}).items() if v}
        self.report.check(
            bool(doc.get("final")) and counts == dict(accepted),
            f"tally shows {doc.get('counts')} (final {doc.get('final')}), "
            f"antifraud accepted {dict(accepted)}",
        )
        self.report.results = doc

    async def audit(self, http: httpx.AsyncClient, campaign: Campaign, record: str) -> None:
        """The public audit record: the draw's, with the commitment and weights planned."""
        audit = await http.get(f"{self.base}/lottery/audit")
        self.report.check(
            audit.status_code == 200 and audit.text == record,
            f"the public audit record ({audit.status_code}) differs from the draw's answer",
        )
        self.report.audit_file = self.env.run_dir / f"{self.poll_id}.audit.json"
        self.report.audit_file.write_text(audit.text, encoding="utf-8")
        parsed = json.loads(audit.text)
        self.report.check(
            parsed.get("commitment") == self.report.commitment,
            "the audit record's commitment is not the one published before the first vote",
        )
        self.weights = {e["entry_id"]: int(e["weight"]) for e in parsed.get("entries", [])}
        eligible = +Counter({w: k for w, k in campaign.expected_weights().items() if w > 0})
        found = Counter(self.weights.values())
        self.report.check(
            found == eligible,
            f"entries by days in the audit record {sorted(found.items())}, "
            f"planned {sorted(eligible.items())}",
        )

    async def console(self, http: httpx.AsyncClient, campaign: Campaign) -> None:
        """What staff see: the days histogram, and the CSV for prize delivery (not shown)."""
        overview = (await http.get("/staff/api/polls", headers=self.staff)).json()
        polls: list[dict[str, Any]] = overview.get("polls", [])
        mine = next((p for p in polls if p["poll_id"] == self.poll_id), {})
        self.report.histogram = {int(k): int(v) for k, v in mine.get("days_histogram", {}).items()}
        shown = +Counter(self.report.histogram)
        planned = +campaign.expected_weights()
        self.report.check(
            shown == planned,
            f"the staff console's days {sorted(shown.items())}, planned {sorted(planned.items())}",
        )
        csv = await http.get(f"{self.base}/lottery/winners.csv", headers=self.staff)
        rows = len(csv.text.strip().splitlines()) - 1 if csv.status_code == 200 else -1
        self.report.check(
            rows == len(self.report.winners),
            f"winners.csv has {rows} rows for {len(self.report.winners)} winners and reserves",
        )

    async def public(self, http: httpx.AsyncClient) -> None:
        """The masked winners and reserves anyone sees, with the days each one voted."""
        shown = (await http.get(f"{self.base}/lottery")).json()
        for role, key in (("winner", "winners"), ("reserve", "reserve_list")):
            self.report.winners += [
                {**w, "days": self.weights.get(w["entry_id"], 0), "role": role}
                for w in shown.get(key, [])
            ]

    def verify(self) -> None:
        """The project's verifier, run as anyone re-checking the draw would run it."""
        if self.report.audit_file is None:
            return
        done = subprocess.run(
            [sys.executable, "-m", "services.lottery.verify", str(self.report.audit_file)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
            timeout=60,
        )
        self.report.verifier_exit = done.returncode
        self.report.verifier_output = (done.stdout + done.stderr).strip()

    # ---- all of it

    async def run(self) -> Report:
        raw = campaign_poll(self.env.polls_file, PROTOTYPE)
        prototype = parse_catalog(yaml.safe_dump({"polls": [raw]}, allow_unicode=True)).polls[0]
        campaign = self.plan(prototype)
        await self.install(raw)
        limits = httpx.Limits(max_connections=ENTRY_CONCURRENCY + 4)
        async with httpx.AsyncClient(
            base_url=self.env.gateway_url, trust_env=False, timeout=30.0, limits=limits
        ) as http:
            await self.await_poll(http)
            await self.enter(http, campaign)
            await self.publish(campaign)
            await self.live(http, campaign)
            record = await self.draw(http)
            found = await self.decisions(campaign)
            self.judge(campaign, found)
            await self.results(http, found)
            await self.audit(http, campaign, record)
            await self.public(http)
            await self.console(http, campaign)
        self.verify()
        for line in summary(self.report):
            self.say(line)
        return self.report


async def _sleep_until(instant: datetime) -> None:
    await asyncio.sleep(max(0.0, (instant - datetime.now(UTC)).total_seconds()))


async def replay(env: StackEnv, config: ReplayConfig, say: Say = _print) -> Report:
    return await Replay(env, config, say).run()


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.replay",
        description="Replay the Futian campaign through the stack, draw, and verify the draw.",
    )
    defaults = ReplayConfig()
    parser.add_argument(
        "--voters", type=int, default=defaults.voters, help="people (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the campaign's seed")
    parser.add_argument(
        "--lead",
        type=float,
        default=defaults.lead,
        help="seconds from adding the rehearsal poll to its close (default %(default)s)",
    )
    parser.add_argument("--live-votes", type=int, default=defaults.live_votes)
    parser.add_argument(
        "--external-entropy", default="", help="public randomness mixed into the draw"
    )
    parser.add_argument("--draw-timeout", type=float, default=defaults.draw_timeout)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = ReplayConfig(
        voters=args.voters,
        seed=args.seed,
        lead=args.lead,
        live_votes=args.live_votes,
        external_entropy=args.external_entropy,
        draw_timeout=args.draw_timeout,
    )
    started = time.monotonic()
    try:
        env = StackEnv.from_env(os.environ)
        report = asyncio.run(replay(env, config))
    except ReplayError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(f"(replay took {time.monotonic() - started:.0f} s)")
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
