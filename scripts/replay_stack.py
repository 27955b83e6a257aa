"""What the replay does to the stack it runs against, below HTTP: its catalog and Kafka.

- `install_poll` adds the rehearsal poll to the stack's catalog and rolls the four
  services (they read the catalog at start), as a catalog change is deployed.
- `publish` writes campaign-dated `VoteSubmitted` events to `votes.submitted` as the
  edge does: key = voter id, acks from every in-sync replica, idempotent producer.
- `read_decisions` reads `votes.accepted` and `votes.rejected` from the beginning, as
  any consumer of the contract's topics may, and keeps one poll's decisions.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from scripts.stack import SERVICES, StackError, control_request
from shared.catalog import parse_catalog
from shared.events import TOPIC_ACCEPTED, TOPIC_REJECTED, TOPIC_SUBMITTED, VoteSubmitted

REPO = Path(__file__).resolve().parent.parent
HISTORICAL_CATALOG = REPO / "shared" / "demo_polls.yaml"
RESTART_TIMEOUT = 180.0


class ReplayError(RuntimeError):
    """The replay cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Decision:
    vote_id: str
    voter_id: str
    verdict: str  # "accepted" or the rejection reason
    choice: str | None
    day: str | None


def campaign_poll(polls_file: Path, poll_id: str) -> dict[str, Any]:
    """The campaign's catalog entry as written: the stack's, or the project's copy."""
    for path in (polls_file, HISTORICAL_CATALOG):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for poll in raw.get("polls") or []:
            if isinstance(poll, dict) and poll.get("id") == poll_id:
                return dict(poll)
    raise ReplayError(f"no poll {poll_id!r} in {polls_file} or {HISTORICAL_CATALOG}")


def add_poll(polls_file: Path, poll: Mapping[str, Any]) -> None:
    """Append a poll to the catalog file, validated first and replaced atomically."""
    raw = yaml.safe_load(polls_file.read_text(encoding="utf-8")) or {}
    polls = [p for p in raw.get("polls") or [] if p.get("id") != poll["id"]]
    text = yaml.safe_dump(
        {**raw, "polls": [*polls, dict(poll)]}, allow_unicode=True, sort_keys=False, width=100
    )
    parse_catalog(text, str(polls_file))  # a catalog the services would refuse stops here
    staging = polls_file.with_name(polls_file.name + ".replay")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, polls_file)


def _restart(run_dir: Path, name: str) -> None:
    try:
        control_request(run_dir, {"op": "restart", "name": name}, timeout=RESTART_TIMEOUT)
    except (OSError, StackError) as exc:
        raise ReplayError(
            f"could not restart {name} through {run_dir / 'control.sock'}: {exc}"
        ) from exc


async def roll_services(run_dir: Path) -> float:
    """Restart the four services at once through the runner; seconds until all are ready."""
    started = time.monotonic()
    await asyncio.gather(*(asyncio.to_thread(_restart, run_dir, name) for name in SERVICES))
    return time.monotonic() - started


async def publish(bootstrap: str, events: Iterable[VoteSubmitted], chunk: int = 2_000) -> int:
    """Send the events in order and wait until the broker has every one."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    sent = 0
    try:
        pending = []
        for event in events:
            value = event.model_dump_json().encode()
            pending.append(await producer.send(TOPIC_SUBMITTED, value, key=event.voter_id.encode()))
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                sent += len(pending)
                pending = []
        await asyncio.gather(*pending)
        sent += len(pending)
    finally:
        await producer.stop()
    return sent


def _decision(topic: str, value: bytes) -> tuple[str, Decision] | None:
    try:
        doc = json.loads(value)
        verdict = "accepted" if topic == TOPIC_ACCEPTED else str(doc["reason"])
        found = Decision(
            str(doc["vote_id"]), str(doc["voter_id"]), verdict, doc.get("choice"), doc.get("day")
        )
        return str(doc["poll_id"]), found
    except (ValueError, KeyError, TypeError):
        return None  # not a decision record; the contract's consumers skip it too


async def read_decisions(
    bootstrap: str, poll_id: str, expect: set[str], within: float = 60.0
) -> dict[str, Decision]:
    """Every decision on `poll_id`, read until the votes in `expect` are all there."""
    consumer = AIOKafkaConsumer(
        TOPIC_ACCEPTED,
        TOPIC_REJECTED,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[str, Decision] = {}
    deadline = time.monotonic() + within
    try:
        while not expect <= found.keys() and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5_000)
            for tp, records in batch.items():
                for record in records:
                    if record.value is None:
                        continue
                    decided = _decision(tp.topic, record.value)
                    if decided is not None and decided[0] == poll_id:
                        found[decided[1].vote_id] = decided[1]
    finally:
        await consumer.stop()
    return found
