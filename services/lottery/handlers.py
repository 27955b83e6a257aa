"""The lottery's use cases: fix a poll's seed, register an entry, show it, draw once,
publish the result and export it for prize delivery.

This is the one place that opens sealed names and phones, and every value it returns to
a public caller is masked; only `winner_rows` (the staff CSV) carries them in full.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Counter, Gauge

from services.lottery import draw as rules_draw
from services.lottery import store
from services.lottery.bodies import EntryForm
from services.lottery.draw import AuditRecord, Entry
from services.lottery.pii import PiiCipher, entry_aad
from services.lottery.rules import ENTRY_ID_KEY_LABEL, entry_id, mask_name, mask_phone
from services.lottery.schedule import (
    LotteryState,
    commitment_due,
    days_histogram,
    lottery_state,
    require_drained,
    require_draw_time,
    require_entries_open,
)
from shared.catalog import CLOSE_GRACE, Catalog, LotteryRules, Poll
from shared.errors import Conflict, Gone, NotFound, ServiceUnavailable
from shared.events import format_utc

log = logging.getLogger(__name__)

ENTRIES = Gauge("lottery_entries", "Prize-draw entries registered", ["poll"])
DRAWS = Counter("lottery_draws_total", "Prize draws performed", ["poll"])
DRAW_VOTES_LEFT = Gauge(
    "lottery_draw_votes_left",
    "For a poll awaiting its draw: votes received before the close still to be decided "
    "or recorded (0: the draw can go ahead)",
    ["poll"],
)

# What is still on its way, of the votes received before a close ("group/topic": n).
PipelineLeft = Callable[[datetime], Awaitable[dict[str, int]]]

WINNER = "winner"
RESERVE = "reserve"


@dataclass(frozen=True)
class Registered:
    created: bool
    entry_id: str
    phone_masked: str


@dataclass(frozen=True)
class Drawn:
    created: bool
    draw: store.Draw


@dataclass(frozen=True)
class Erased:
    """Entrants' details erased: now (`created`), or earlier by the draw's record."""

    created: bool
    at: datetime
    by: str
    entries: int


@dataclass(frozen=True)
class WinnerRow:
    """One line of the prize-delivery export: the only place details leave unmasked."""

    rank: int
    role: str
    entry_id: str
    name: str
    phone: str

    def __repr__(self) -> str:
        return f"WinnerRow(rank={self.rank}, role={self.role}, entry_id={self.entry_id})"


def _seed_aad(poll_id: str) -> bytes:
    # An empty entry id is never a real one (those are 32 hex characters).
    return entry_aad(poll_id, "", "draw-seed")


class Lottery:
    def __init__(
        self,
        catalog: Catalog,
        cipher: PiiCipher,
        clock: Callable[[], datetime],
        pipeline_left: PipelineLeft,
    ) -> None:
        self.catalog = catalog
        self.cipher = cipher
        self.clock = clock
        self._pipeline_left = pipeline_left
        self._pool: asyncpg.Pool | None = None
        # A fixed commitment never changes, so once read it is kept for the process.
        self._commitments: dict[str, store.Commitment] = {}
        self._readiness_shown: set[str] = set()  # polls with a draw-readiness series

    def bind(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise ServiceUnavailable("the lottery is starting", code="starting")
        return self._pool

    def poll(self, poll_id: str) -> Poll:
        """The catalog poll with a prize draw; 404 for an unknown poll or one without."""
        poll = self.catalog.get(poll_id)
        if poll is None:
            raise NotFound(f"no poll {poll_id!r}", code="unknown_poll")
        _rules(poll)
        return poll

    # ---- the seed -------------------------------------------------------------------

    async def commitment(self, poll: Poll) -> store.Commitment | None:
        """The poll's fixed seed record, fixing it now if voting has opened; None before."""
        known = self._commitments.get(poll.id)
        if known is not None:
            return known
        if not commitment_due(poll, self.clock()):
            return None
        seed = rules_draw.new_seed()
        proposed = store.Commitment(
            poll_id=poll.id,
            seed_sealed=self.cipher.encrypt(seed.hex(), aad=_seed_aad(poll.id)),
            commitment=rules_draw.commitment(seed),
            entry_key_id=self.cipher.current_key_id,
        )
        fixed = await store.fix_commitment(self.pool, proposed)
        if fixed.commitment == proposed.commitment:
            log.info("seed fixed", extra={"poll": poll.id, "commitment": fixed.commitment})
        self._commitments[poll.id] = fixed
        return fixed

    async def fix_due_commitments(self) -> None:
        for poll in self.catalog.polls:
            if poll.lottery is not None:
                await self.commitment(poll)

    def _seed(self, fixed: store.Commitment) -> bytes:
        seed = bytes.fromhex(self.cipher.decrypt(fixed.seed_sealed, aad=_seed_aad(fixed.poll_id)))
        if rules_draw.commitment(seed) != fixed.commitment:
            raise RuntimeError(f"the stored seed of {fixed.poll_id} does not match its commitment")
        return seed

    async def _required_commitment(self, poll: Poll) -> store.Commitment:
        fixed = await self.commitment(poll)
        if fixed is None:
            raise RuntimeError(f"{poll.id} has no commitment although voting has opened")
        return fixed

    # ---- entries --------------------------------------------------------------------

    async def register(self, poll: Poll, voter_id: str, form: EntryForm) -> Registered:
        require_entries_open(poll, self.clock())
        fixed = await self._required_commitment(poll)
        key = self.cipher.subkey(ENTRY_ID_KEY_LABEL, key_id=fixed.entry_key_id)
        eid = entry_id(key, poll.id, form.phone)
        sealed = self._seal(poll.id, eid, form.name, form.phone)
        created = await store.register(self.pool, poll.id, voter_id, sealed)
        log.info("entry registered", extra={"poll": poll.id, "entry_id": eid, "new": created})
        return Registered(created, eid, mask_phone(form.phone))

    async def entry_of(self, poll: Poll, voter_id: str) -> dict[str, Any]:
        mine = await store.entry_of_voter(self.pool, poll.id, voter_id)
        if mine is None:
            raise NotFound("this voter has no entry in the prize draw", code="no_entry")
        name, phone = self._open(poll.id, mine.entry)
        return {
            "entry_id": mine.entry.entry_id,
            "phone_masked": mask_phone(phone),
            "name_masked": mask_name(name),
            "days": mine.days,
            "last_day": mine.last_day.isoformat() if mine.last_day else None,
        }

    def _seal(self, poll_id: str, eid: str, name: str, phone: str) -> store.SealedEntry:
        """An entry's name and phone, each bound to its poll, entry and field."""
        return store.SealedEntry(
            entry_id=eid,
            name_sealed=self.cipher.encrypt(name, aad=entry_aad(poll_id, eid, "name")),
            phone_sealed=self.cipher.encrypt(phone, aad=entry_aad(poll_id, eid, "phone")),
        )

    def _open(self, poll_id: str, sealed: store.SealedEntry) -> tuple[str, str]:
        eid = sealed.entry_id
        name = self.cipher.decrypt(sealed.name_sealed, aad=entry_aad(poll_id, eid, "name"))
        phone = self.cipher.decrypt(sealed.phone_sealed, aad=entry_aad(poll_id, eid, "phone"))
        return name, phone

    # ---- the draw -------------------------------------------------------------------

    async def draw(self, poll: Poll, staff: str, external_entropy: str) -> Drawn:
        """The poll's one draw: performed now if allowed, or the stored one again."""
        existing = await store.draw_of(self.pool, poll.id)
        if existing is not None:
            return Drawn(False, existing)
        require_draw_time(poll, self.clock())
        require_drained(await self._pipeline_left(poll.closes_at))
        fixed = await self._required_commitment(poll)
        async with store.draw_lock(self.pool, poll.id) as conn:
            # Whoever waited for the lock finds the draw made by whoever held it.
            existing = await store.draw_of(conn, poll.id)
            if existing is not None:
                return Drawn(False, existing)
            made = await self._perform(conn, poll, fixed, staff, external_entropy)
        DRAWS.labels(poll.id).inc()
        log.info("draw performed", extra={"poll": poll.id, "staff": staff})
        return Drawn(True, made)

    async def _perform(
        self,
        conn: PoolConnectionProxy,
        poll: Poll,
        fixed: store.Commitment,
        staff: str,
        external_entropy: str,
    ) -> store.Draw:
        prizes = _rules(poll)
        weights = await store.weights(conn, poll.id)
        record = rules_draw.draw(
            poll_id=poll.id,
            seed=self._seed(fixed),
            entries=[Entry(entry_id=e, weight=w) for e, w in weights.items()],
            prizes=prizes.prizes,
            reserves=prizes.reserves,
            external_entropy=external_entropy,
            drawn_at=self.clock(),
            drawn_by=staff,
        )
        sealed = await store.sealed_entries(conn, poll.id, record.winners + record.reserves)
        made = store.Draw(
            record=record.model_dump_json(),
            ranked=self._ranked(poll.id, record, sealed, weights),
            drawn_at=record.drawn_at,
            drawn_by=staff,
        )
        await store.save_draw(conn, poll.id, made)
        return made

    def _ranked(
        self,
        poll_id: str,
        record: AuditRecord,
        sealed: dict[str, store.SealedEntry],
        weights: dict[str, int],
    ) -> list[dict[str, Any]]:
        """Winners then reserves, masked, as the public sees them (kept with the draw)."""
        ranked = []
        for role, ids in ((WINNER, record.winners), (RESERVE, record.reserves)):
            for rank, eid in enumerate(ids, 1):
                name, phone = self._open(poll_id, sealed[eid])
                ranked.append(
                    {
                        "rank": rank,
                        "role": role,
                        "entry_id": eid,
                        "name_masked": mask_name(name),
                        "phone_masked": mask_phone(phone),
                        "days": weights[eid],
                    }
                )
        return ranked

    async def audit_record(self, poll: Poll) -> str:
        made = await store.draw_of(self.pool, poll.id)
        if made is None:
            raise NotFound("the draw has not happened yet", code="not_drawn")
        return made.record

    async def winner_rows(self, poll: Poll) -> list[WinnerRow]:
        made = await store.draw_of(self.pool, poll.id)
        if made is None:
            raise NotFound("the draw has not happened yet", code="not_drawn")
        if made.details_erased_at is not None:
            raise Gone(
                f"entrants' names and numbers were erased at "
                f"{format_utc(made.details_erased_at)} by {made.details_erased_by}",
                code="details_erased",
            )
        ids = [r["entry_id"] for r in made.ranked]
        sealed = await store.sealed_entries(self.pool, poll.id, ids)
        rows = []
        for item in made.ranked:
            name, phone = self._open(poll.id, sealed[item["entry_id"]])
            rows.append(WinnerRow(item["rank"], item["role"], item["entry_id"], name, phone))
        return rows

    async def erase_details(self, poll: Poll, staff: str) -> Erased:
        """Once the prizes are delivered: every entry of the poll keeps only its masked
        name and number. The public winners list and the audit record hold nothing more,
        so both stay as published; the full export is gone for good."""
        async with store.draw_lock(self.pool, poll.id) as conn:
            made = await store.draw_of(conn, poll.id)
            if made is None:
                raise Conflict(
                    "the draw has not happened yet: winners must be reached first",
                    code="not_drawn",
                )
            entries = await store.all_entries(conn, poll.id)
            if made.details_erased_at is not None and made.details_erased_by is not None:
                return Erased(False, made.details_erased_at, made.details_erased_by, len(entries))
            at = self.clock()
            masked = [self._masked(poll.id, e) for e in entries]
            await store.erase_details(conn, poll.id, masked, at, staff)
        log.info("details erased", extra={"poll": poll.id, "staff": staff, "entries": len(masked)})
        return Erased(True, at, staff, len(masked))

    def _masked(self, poll_id: str, sealed: store.SealedEntry) -> store.SealedEntry:
        name, phone = self._open(poll_id, sealed)
        return self._seal(poll_id, sealed.entry_id, mask_name(name), mask_phone(phone))

    # ---- what is shown --------------------------------------------------------------

    async def public_view(self, poll: Poll) -> dict[str, Any]:
        fixed = await self.commitment(poll)
        made = await store.draw_of(self.pool, poll.id)
        entries = await store.entry_count(self.pool, poll.id)
        return _view(poll, self.clock(), fixed, made, entries)

    async def staff_overview(self) -> list[dict[str, Any]]:
        """Every poll of the catalog, for the staff console, with its voting window,
        options and results policy (for the count, read from tally). A poll with a draw
        adds its state, the voting state (its own "open" also spans the time before the
        opening), entries, days histogram, masked results and who made the draw; one
        without has the voting state (upcoming, open, closed) and `lottery` false."""
        await self.fix_due_commitments()
        now = self.clock()
        draws = await store.all_draws(self.pool)
        views = []
        for poll in self.catalog.polls:
            if poll.lottery is None:
                views.append(
                    {"poll_id": poll.id, "lottery": False, "state": poll.state_at(now).value}
                    | _catalog_facts(poll)
                )
                continue
            weights = await store.weights(self.pool, poll.id)
            view = _view(
                poll, now, self._commitments.get(poll.id), draws.get(poll.id), len(weights)
            )
            view["lottery"] = True
            view["voting_state"] = poll.state_at(now).value
            view |= _catalog_facts(poll)
            made = draws.get(poll.id)
            view["drawn_by"] = made.drawn_by if made is not None else None
            erased = made.details_erased_at if made is not None else None
            view["details_erased_at"] = format_utc(erased) if erased is not None else None
            view["details_erased_by"] = made.details_erased_by if made is not None else None
            view["eligible"] = sum(1 for w in weights.values() if w > 0)
            view["days_histogram"] = days_histogram(weights.values())
            views.append(view)
        return views

    async def refresh_entry_gauge(self) -> None:
        counts = await store.entry_counts(self.pool)
        for poll in self.catalog.polls:
            if poll.lottery is not None:
                ENTRIES.labels(poll.id).set(counts.get(poll.id, 0))

    async def refresh_draw_readiness(self) -> None:
        """For each poll awaiting its draw, what still holds it back (the draw objective,
        docs/slo.md); a poll that is open or drawn has no series."""
        now = self.clock()
        drawn = await store.drawn_polls(self.pool)
        for poll in self.catalog.polls:
            if poll.lottery is None:
                continue
            state = lottery_state(poll, now, drawn=poll.id in drawn)
            if state is not LotteryState.AWAITING_DRAW or now < poll.closes_at + CLOSE_GRACE:
                if poll.id in self._readiness_shown:
                    DRAW_VOTES_LEFT.remove(poll.id)
                    self._readiness_shown.discard(poll.id)
                continue
            try:
                left = await self._pipeline_left(poll.closes_at)
            except ServiceUnavailable:
                return  # Kafka unreachable: BrokerUnreachable says so; try next round
            DRAW_VOTES_LEFT.labels(poll.id).set(sum(left.values()))
            self._readiness_shown.add(poll.id)


def _view(
    poll: Poll,
    now: datetime,
    fixed: store.Commitment | None,
    made: store.Draw | None,
    entries: int,
) -> dict[str, Any]:
    prizes = _rules(poll)
    return {
        "poll_id": poll.id,
        "commitment": fixed.commitment if fixed is not None else None,
        "prize": prizes.prize,
        "prizes": prizes.prizes,
        "reserves": prizes.reserves,
        "state": lottery_state(poll, now, drawn=made is not None).value,
        "entries": entries,
        "drawn_at": format_utc(made.drawn_at) if made is not None else None,
        "winners": _public(made, WINNER),
        "reserve_list": _public(made, RESERVE),
    }


def _catalog_facts(poll: Poll) -> dict[str, Any]:
    return {
        "title": poll.title,
        "opens_at": format_utc(poll.opens_at),
        "closes_at": format_utc(poll.closes_at),
        "timezone": poll.timezone,
        "options": list(poll.options),
        "results": poll.results,
        "translations": poll.translations.model_dump(exclude_none=True),
    }


def _rules(poll: Poll) -> LotteryRules:
    if poll.lottery is None:
        raise NotFound(f"poll {poll.id!r} has no prize draw", code="no_lottery")
    return poll.lottery


def _public(made: store.Draw | None, role: str) -> list[dict[str, Any]]:
    if made is None:
        return []
    keys = ("rank", "entry_id", "name_masked", "phone_masked")
    return [{k: item[k] for k in keys} for item in made.ranked if item["role"] == role]
