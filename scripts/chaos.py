"""Faults under load, each ended by an exact reconciliation (`make chaos`).

Every scenario sends a known set of votes through the gateway with the load generator
(fresh valid votes mostly, some repeats of the same voter and some wrong captchas) and,
a third of the way in, injects one fault through the stack's control socket:

    kill-<service>      SIGKILL to the service's process group; the runner restarts it
    restart-kafka       a graceful stop of the broker, 5 s down, a start
    restart-postgres    the same for the database
    pause-<service>     SIGSTOP for longer than the consumer session timeout, then SIGCONT

When the load is over and every component is ready again, it waits until every consumer
group has committed the end of its topic, then reconciles what the load generator was
told with the sources of truth (see scripts/reconcile_votes.py). A scenario passes when
nothing acknowledged was lost, nothing was counted twice, no refused vote was stored and
no verdict was changed by the fault.

    python -m scripts.stack exec --name chaos -- python -m scripts.chaos [--scenarios ...]
        [--rate N] [--seconds N] [--write-doc]

The stack's addresses and secrets come from the environment `scripts.stack exec` sets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg

from bench.loadgen import LoadConfig, LoadReport, Mix, run_load
from scripts.reconcile_votes import (
    Drain,
    Reconciliation,
    SentVote,
    gather_evidence,
    read_counts,
    reconcile,
    wait_drained,
)
from scripts.stack import DEMO_POLL, REPO, SERVICES, control_request

Action = Literal["kill", "restart", "pause"]
# What must be up before a scenario starts and again before the pipeline may drain.
ESSENTIAL = ("postgres", "kafka", *SERVICES, "gateway")
# The broker's restart goes last: whatever it leaves broken would fail every later one.
DEFAULT_SCENARIOS = (
    "kill-vote_ingest",
    "kill-antifraud",
    "kill-tally",
    "kill-lottery",
    "restart-postgres",
    "pause-antifraud",
    "restart-kafka",
)
# Longer than the consumers' session timeout (10 s): the group evicts the paused member.
PAUSE_SECONDS = 15.0
# How long a restarted broker or database stays down between its stop and its start.
DOWN_SECONDS = 5.0
READY_TIMEOUT = 180.0
# Votes due this long after the target is ready again must be taken like before the fault.
RECOVERY_GRACE = timedelta(seconds=3)
RECOVERED_SHARE = 0.9
# Votes of the run: fresh voters mostly, repeats (rejected: daily_limit) and wrong answers.
CHAOS_MIX = Mix(valid=0.82, repeat=0.10, wrong_captcha=0.08, burst=0.0, nat=0.0)
DOC = REPO / "docs" / "chaos.md"


@dataclass(frozen=True)
class ChaosEnv:
    """Where the stack is and the secrets the load generator signs with."""

    gateway_url: str
    database_url: str
    kafka_bootstrap: str
    captcha_secret: str
    voter_token_secret: str
    run_dir: Path
    poll_id: str = DEMO_POLL

    @classmethod
    def from_environ(cls, poll_id: str = DEMO_POLL) -> ChaosEnv:
        names = (
            "GATEWAY_URL",
            "DATABASE_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
            "CAPTCHA_SECRET",
            "VOTER_TOKEN_SECRET",
            "STACK_RUN_DIR",
        )
        missing = [name for name in names if not os.environ.get(name)]
        if missing:
            raise SystemExit(
                f"{', '.join(missing)} not set: run me through "
                "`python -m scripts.stack exec --name chaos -- python -m scripts.chaos` "
                "(make chaos)"
            )
        env = os.environ
        return cls(
            env["GATEWAY_URL"].rstrip("/"),
            env["DATABASE_URL"],
            env["KAFKA_BOOTSTRAP_SERVERS"],
            env["CAPTCHA_SECRET"],
            env["VOTER_TOKEN_SECRET"],
            Path(env["STACK_RUN_DIR"]),
            poll_id,
        )


# --------------------------------------------------------------------------- the stack


class Control:
    """The stack runner's control socket (blocking calls: run them in a thread)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def call(self, op: str, timeout: float = 10.0, **fields: object) -> Any:
        return control_request(self.run_dir, {"op": op, **fields}, timeout=timeout)

    def pid(self, name: str) -> int | None:
        pid = self.call("pid", name=name)
        return int(pid) if pid is not None else None

    def wait_ready(self, name: str, within: float = READY_TIMEOUT) -> None:
        self.call("wait_ready", timeout=within + 10, name=name, wait=within)

    def wait_all_ready(self, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        for name in ESSENTIAL:
            self.wait_ready(name, max(1.0, deadline - time.monotonic()))

    def wait_new_process(self, name: str, old_pid: int, within: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid is not None and pid != old_pid:
                self.wait_ready(name, max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} was not restarted within {within:.0f} s")


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    action: Action
    target: str

    @property
    def name(self) -> str:
        return f"{self.action}-{self.target}"

    @classmethod
    def parse(cls, name: str) -> Scenario:
        action, _, target = name.partition("-")
        components = (*SERVICES, "kafka", "postgres")
        if action not in ("kill", "restart", "pause") or target not in components:
            raise ValueError(
                f"unknown scenario {name!r}: kill-, restart- or pause- followed by one of "
                f"{', '.join(components)}"
            )
        chosen: Action = (
            "kill" if action == "kill" else "restart" if action == "restart" else "pause"
        )
        return cls(chosen, target)


@dataclass
class Fault:
    injected: datetime | None = None
    recovered: datetime | None = None  # the target ready again
    error: str | None = None

    @property
    def recovered_after(self) -> float | None:
        if self.injected is None or self.recovered is None:
            return None
        return (self.recovered - self.injected).total_seconds()


@dataclass(frozen=True)
class AfterRecovery:
    """Votes due once the target had been ready for a while: the service must take them."""

    sent: int
    acknowledged: int

    @property
    def ok(self) -> bool:
        return self.acknowledged >= RECOVERED_SHARE * self.sent

    def __str__(self) -> str:
        return f"{self.acknowledged}/{self.sent}"


@dataclass
class ScenarioResult:
    scenario: str
    rate: float
    seconds: float
    fault: Fault
    drain: Drain
    answers: dict[str, int]  # "202", "503 broker_unavailable", "no answer", ...
    after_recovery: AfterRecovery
    reconciliation: Reconciliation
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return (
            self.reconciliation.ok
            and self.drain.drained
            and self.fault.error is None
            and self.after_recovery.ok
        )

    def failures(self) -> list[str]:
        found = []
        if self.fault.error:
            found.append(f"fault: {self.fault.error}")
        if not self.drain.drained:
            found.append(
                f"pipeline not drained after {self.drain.seconds:.0f} s: lag {self.drain.lag}"
                + (f" ({self.drain.error})" if self.drain.error else "")
            )
        if not self.after_recovery.ok:
            found.append(
                f"not recovered: {self.after_recovery} votes due "
                f"{RECOVERY_GRACE.total_seconds():.0f} s after the target was ready again "
                f"were acknowledged; answers: {self.answers}"
            )
        return found + self.reconciliation.problems()


def _inject(
    control: Control, scenario: Scenario, pause_seconds: float, down_seconds: float
) -> None:
    """The fault itself; returns once the target is ready again (or raises)."""
    name = scenario.target
    if scenario.action == "kill":
        old = control.pid(name)
        if old is None:
            raise RuntimeError(f"{name} is not running")
        control.call("kill", name=name, signal=9)
        control.wait_new_process(name, old)
    elif scenario.action == "restart":
        # Stopped, kept down a while (a host reboot, a rolling restart), then started.
        control.call("stop", timeout=READY_TIMEOUT, name=name)
        try:
            time.sleep(down_seconds)
        finally:
            control.call("start", timeout=READY_TIMEOUT + 30, name=name)
    else:
        control.call("pause", name=name)
        try:
            time.sleep(pause_seconds)
        finally:
            control.call("resume", name=name)
        control.wait_ready(name)


async def _fault(
    control: Control,
    scenario: Scenario,
    delay: float,
    fault: Fault,
    *,
    pause_seconds: float,
    down_seconds: float,
) -> None:
    await asyncio.sleep(delay)
    fault.injected = datetime.now(UTC)
    try:
        await asyncio.to_thread(_inject, control, scenario, pause_seconds, down_seconds)
    except Exception as exc:  # reported with the scenario, which then fails
        fault.error = f"{type(exc).__name__}: {exc}"
        return
    fault.recovered = datetime.now(UTC)


def _after_recovery(report: LoadReport, fault: Fault) -> AfterRecovery:
    if fault.recovered is None:
        return AfterRecovery(0, 0)
    # The generator's schedule starts 50 ms after `started_at` (bench/loadgen.py).
    start = report.started_at + timedelta(seconds=0.05)
    due = [
        v
        for v in report.sent
        if start + timedelta(seconds=v.intended) > fault.recovered + RECOVERY_GRACE
    ]
    return AfterRecovery(len(due), sum(1 for v in due if v.status == 202))


def _answers(report: LoadReport) -> dict[str, int]:
    found: Counter[str] = Counter()
    for vote in report.sent:
        if vote.status == 0:
            found["no answer"] += 1
        elif vote.status == 202:
            found["202"] += 1
        else:
            found[f"{vote.status} {vote.code or ''}".strip()] += 1
    return dict(sorted(found.items()))


async def _counts(env: ChaosEnv) -> dict[str, int]:
    conn = await asyncpg.connect(env.database_url)
    try:
        return await read_counts(conn, env.poll_id)
    finally:
        await conn.close()


async def run_scenario(
    env: ChaosEnv,
    scenario: Scenario,
    *,
    rate: float,
    seconds: float,
    pause_seconds: float = PAUSE_SECONDS,
    down_seconds: float = DOWN_SECONDS,
    drain_timeout: float = 300.0,
    seed: int | None = None,
) -> ScenarioResult:
    """Load with one fault, then drain and reconcile exactly."""
    control = Control(env.run_dir)
    await asyncio.to_thread(control.wait_all_ready)
    # Whatever an earlier scenario or test left in flight settles first, so the totals
    # taken here move by this run's votes alone.
    await wait_drained(env.kafka_bootstrap, drain_timeout)
    counts_before = await _counts(env)
    config = LoadConfig(
        base_url=env.gateway_url,
        poll_id=env.poll_id,
        rate=rate,
        duration=seconds,
        mix=CHAOS_MIX,
        forwarded_for=False,
        sessions="mint",
        captchas="mint",
        captcha_secret=env.captcha_secret,
        voter_token_secret=env.voter_token_secret,
        seed=seed,
    )
    started_at = datetime.now(UTC)
    fault = Fault()
    load = asyncio.create_task(run_load(config))
    delay = seconds / 3
    await _fault(
        control, scenario, delay, fault, pause_seconds=pause_seconds, down_seconds=down_seconds
    )
    report = await load
    with contextlib.suppress(Exception):  # a component that stays down shows in the drain
        await asyncio.to_thread(control.wait_all_ready)
    drain = await wait_drained(env.kafka_bootstrap, drain_timeout)
    sent = [SentVote(v.voter_id, v.kind.value, v.status, v.code, v.vote_id) for v in report.sent]
    evidence = await gather_evidence(
        env.database_url, env.kafka_bootstrap, env.poll_id, sent, counts_before
    )
    return ScenarioResult(
        scenario.name,
        rate,
        seconds,
        fault,
        drain,
        _answers(report),
        _after_recovery(report, fault),
        reconcile(sent, evidence),
        started_at,
    )


# --------------------------------------------------------------------------- the report

COLUMNS = (
    "scenario",
    "sent",
    "202",
    "refused",
    "unknown (stored)",
    "decided",
    "accepted",
    "counted",
    "days-voted",
    "lost",
    "duplicated",
    "stored though refused",
    "misjudged",
    "topic dups",
    "recovery s",
    "202 after recovery",
    "drain s",
    "result",
)


def table_row(result: ScenarioResult) -> list[str]:
    r = result.reconciliation
    recovery = result.fault.recovered_after
    return [
        result.scenario,
        str(r.sent),
        str(r.acknowledged),
        str(r.refused),
        f"{r.unknown} ({r.unknown_stored})",
        str(r.decided),
        str(r.accepted),
        str(r.counted),
        str(r.days_recorded),
        str(r.lost),
        str(r.duplicated),
        str(r.phantom),
        str(r.misjudged),
        str(r.topic_duplicates),
        f"{recovery:.1f}" if recovery is not None else "-",
        str(result.after_recovery),
        f"{result.drain.seconds:.1f}",
        "pass" if result.ok else "**FAIL**",
    ]


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(table_row(result)) + " |" for result in results]
    return "\n".join(lines)


def details(results: Sequence[ScenarioResult], limit: int = 20) -> str:
    lines = []
    for result in results:
        answers = ", ".join(f"{name}: {n}" for name, n in result.answers.items())
        lines.append(f"- **{result.scenario}**: answers {answers}.")
        failures = result.failures()
        for failure in failures[:limit]:
            lines.append(f"  - {failure}")
        if len(failures) > limit:
            lines.append(f"  - ... and {len(failures) - limit} more")
    return "\n".join(lines)


async def machine_lines(database_url: str) -> list[str]:
    from bench.machine import describe

    m = await describe(database_url)
    return [
        f"- {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}",
        f"- Python {m['python']}, Apache Kafka {m['kafka']} (single KRaft node), "
        f"PostgreSQL {m['postgres']}",
        "- Load average when the run started: "
        + ", ".join(str(x) for x in m["load_average_at_start"])
        + ". The load generator, the services, Kafka and Postgres share these cores.",
    ]


def render_doc(
    results: Sequence[ScenarioResult], machine: Sequence[str], argv: Sequence[str]
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m scripts.chaos", *argv])
    verdict = "every scenario passed" if all(r.ok for r in results) else "**some scenarios FAILED**"
    rate = results[0].rate if results else 0
    seconds = results[0].seconds if results else 0
    return "\n".join(
        [
            "# Chaos: faults under load, reconciled exactly",
            "",
            f"Measured {stamp} by `make chaos` (`{command}`): {verdict}.",
            "",
            "## Machine",
            "",
            *machine,
            "",
            "## Method",
            "",
            f"Each scenario sends {rate:g} votes/s for {seconds:g} s through the gateway "
            "(fresh valid votes mostly, repeats by the same voter, wrong captchas) and "
            "injects its fault a third of the way in: `kill` is SIGKILL to the service's "
            "process group (the runner restarts it), `restart` a graceful stop, "
            f"{DOWN_SECONDS:g} s down, and a start, "
            f"`pause` SIGSTOP for {PAUSE_SECONDS:g} s (past the 10 s consumer session "
            "timeout), then SIGCONT. After the load, once every component is ready, the "
            "run waits until every consumer group has committed the end of its topic, then "
            "reconciles the load generator's record of every vote with votes.submitted, "
            "antifraud.decisions, votes.accepted/votes.rejected, tally.counted_votes, "
            "tally.counts and lottery.voter_days (`scripts/reconcile_votes.py`).",
            "",
            "## Results",
            "",
            markdown_table(results),
            "",
            details(results),
            "",
            "## Columns",
            "",
            "- **202**: acknowledged; each must be decided once and, if accepted, counted "
            "once and recorded once in days-voted.",
            "- **refused**: 503 `broker_unavailable` from ingest or a 4xx: nothing may be "
            "stored. **stored though refused** counts those found stored anyway.",
            "- **unknown (stored)**: no answer, or the gateway's 503 `service_unavailable` "
            "(its upstream failed mid-request): such a vote may exist; in brackets, how "
            "many did. Stored ones are reconciled like acknowledged ones.",
            "- **decided**: acknowledged votes with a decision; **accepted**, **counted**, "
            "**days-voted**: over every stored vote of the run.",
            "- **lost**: a stored vote not decided, not published, not counted or without "
            "its days-voted row, or totals short of the accepted votes. Must be 0.",
            "- **duplicated**: a vote counted or recorded twice, a rejected vote counted, "
            "totals above the accepted votes, or both verdicts published. Must be 0.",
            "- **misjudged**: a fresh valid vote rejected for anything but a rate limit "
            "(or the daily limit its own repeat took first), or a wrong captcha accepted.",
            "- **topic dups**: extra copies of a decision on votes.accepted/rejected "
            "(allowed: consumers dedupe by vote id).",
            "- **recovery s**: from the fault to the component being ready again; "
            "**202 after recovery**: of the votes due 3 s after the component was ready "
            "again, how many were acknowledged (at least 90% must be: a service that "
            "stays broken after a fault fails the scenario); **drain s**: from the end "
            "of the load to zero consumer lag.",
            "",
        ]
    )


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__)
    parser.add_argument(
        "--scenarios", nargs="+", default=list(DEFAULT_SCENARIOS), metavar="SCENARIO"
    )
    parser.add_argument("--rate", type=float, default=12.0, help="votes per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="load per scenario")
    parser.add_argument("--pause-seconds", type=float, default=PAUSE_SECONDS)
    parser.add_argument("--down-seconds", type=float, default=DOWN_SECONDS)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--poll", default=DEMO_POLL)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--write-doc", action="store_true", help=f"write the table to {DOC}")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    env = ChaosEnv.from_environ(args.poll)
    scenarios = [Scenario.parse(name) for name in args.scenarios]
    machine = await machine_lines(env.database_url)
    results = []
    for scenario in scenarios:
        print(f"chaos: {scenario.name} ...", file=sys.stderr, flush=True)
        result = await run_scenario(
            env,
            scenario,
            rate=args.rate,
            seconds=args.seconds,
            pause_seconds=args.pause_seconds,
            down_seconds=args.down_seconds,
            drain_timeout=args.drain_timeout,
            seed=args.seed,
        )
        print(f"chaos: {scenario.name}: {'pass' if result.ok else 'FAIL'}", file=sys.stderr)
        results.append(result)
    print(markdown_table(results))
    print()
    print(details(results))
    if args.write_doc:
        DOC.write_text(render_doc(results, machine, argv))
        print(f"\nwritten to {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0 if all(result.ok for result in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    # The broker's connection errors while it restarts are expected: keep them quiet.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    try:
        return asyncio.run(run(args, arguments))
    except ValueError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
