"""The prize draw: published rules anyone can re-run (contract section 8). No I/O.

When voting opens a secret 32-byte seed is fixed and `commitment = sha256(seed)` is
published, so the seed cannot be chosen after the entries are known. At the draw:

    entries_digest = sha256("{entry_id}:{weight}\\n" for eligible entries sorted by entry_id)
    final          = sha256(seed ‖ entries_digest as ASCII hex ‖ external_entropy UTF-8)
    h              = HMAC-SHA256(key=final, msg=entry_id UTF-8), a big-endian integer
    u              = ((h >> 203) + 0.5) / 2**53
    key            = ln(u) / weight

`final` is the raw 32-byte digest, used as the HMAC key as is. `u` is computed in IEEE-754
binary64 as written (the top 53 bits of h, plus one half, over 2**53), so it lies in
(0, 1]. `ln` is the platform's double-precision log; C libraries may differ by one unit
in the last place, which could only swap two keys that close.

Winners are the `prizes` largest keys, ties going to the smaller entry_id, in rank order;
the next `reserves` keys are the reserves. Ranking by ln(u)/w is successive sampling
(Efraimidis-Spirakis): at each pick every remaining entry's chance is proportional to its
weight, the number of distinct days its holder voted.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.catalog import PollId
from shared.events import UtcDatetime

ALGORITHM: Final = "weighted-successive-sampling-v1"
SEED_BYTES: Final = 32
EXTERNAL_ENTROPY_MAX_CHARS: Final = 1_000
_TOP_BITS: Final = 53
_SHIFT: Final = 256 - _TOP_BITS

# Printable ASCII without ':' or space: an id can then never forge a digest line.
EntryId = Annotated[str, StringConstraints(pattern=r"^[!-9;-~]{1,128}$")]
HexDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    entry_id: EntryId
    weight: int = Field(ge=0, description="Distinct poll-days with an accepted vote")


class AuditRecord(BaseModel):
    """Everything needed to re-check a draw, published after it.

    `prizes` and `reserves_count` are the rules the draw ran under: without them a list
    with a winner cut from its end would still re-check, since any prefix of the ranking
    recomputes; with them the verifier checks the lists are as long as the rules say,
    and anyone can compare the numbers with the published poll.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    poll_id: PollId
    algorithm: str = Field(min_length=1, max_length=100)
    prizes: int = Field(ge=1)
    reserves_count: int = Field(ge=0)
    commitment: HexDigest
    seed: HexDigest = Field(description="Hex of the 32-byte seed")
    external_entropy: str = Field(max_length=EXTERNAL_ENTROPY_MAX_CHARS)
    entries_digest: HexDigest
    entries: tuple[Entry, ...] = Field(description="The eligible entries, by entry_id")
    winners: tuple[EntryId, ...] = Field(description="entry_ids in rank order")
    reserves: tuple[EntryId, ...] = Field(description="entry_ids in rank order")
    drawn_at: UtcDatetime
    drawn_by: str = Field(min_length=1, max_length=200)


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def commitment(seed: bytes) -> str:
    _check_seed(seed)
    return hashlib.sha256(seed).hexdigest()


def eligible(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    """Entries of weight > 0, sorted by entry_id; a repeated entry_id is refused."""
    listed = list(entries)
    repeated = sorted(i for i, n in Counter(e.entry_id for e in listed).items() if n > 1)
    if repeated:
        raise ValueError(f"entry_id listed more than once: {repeated[:5]}")
    return tuple(sorted((e for e in listed if e.weight > 0), key=lambda e: e.entry_id))


def entries_digest(entries: Iterable[Entry]) -> str:
    lines = "".join(f"{e.entry_id}:{e.weight}\n" for e in eligible(entries))
    return hashlib.sha256(lines.encode("ascii")).hexdigest()


def final_key(seed: bytes, entries_digest: str, external_entropy: str) -> bytes:
    _check_seed(seed)
    material = seed + entries_digest.encode("ascii") + external_entropy.encode("utf-8")
    return hashlib.sha256(material).digest()


def entry_key(final: bytes, entry_id: str, weight: int) -> float:
    if weight <= 0:
        raise ValueError("only entries of weight > 0 have a key")
    h = int.from_bytes(hmac.digest(final, entry_id.encode("utf-8"), "sha256"), "big")
    u = ((h >> _SHIFT) + 0.5) / 2**_TOP_BITS
    return math.log(u) / weight


def ranking(final: bytes, entries: Iterable[Entry]) -> list[str]:
    """Every eligible entry_id, best key first; equal keys go to the smaller entry_id."""
    keyed = [(-entry_key(final, e.entry_id, e.weight), e.entry_id) for e in eligible(entries)]
    return [entry_id for _, entry_id in sorted(keyed)]


def select(
    final: bytes, entries: Iterable[Entry], prizes: int, reserves: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(winners, reserves); with fewer eligible entries than prizes, all of them win."""
    if prizes < 1 or reserves < 0:
        raise ValueError("prizes must be at least 1 and reserves at least 0")
    ranked = ranking(final, entries)
    return tuple(ranked[:prizes]), tuple(ranked[prizes : prizes + reserves])


def draw(
    poll_id: str,
    seed: bytes,
    entries: Iterable[Entry],
    prizes: int,
    reserves: int,
    external_entropy: str,
    drawn_at: datetime,
    drawn_by: str,
) -> AuditRecord:
    chosen = eligible(entries)
    digest = entries_digest(chosen)
    winners, reserve_ids = select(
        final_key(seed, digest, external_entropy), chosen, prizes, reserves
    )
    return AuditRecord(
        poll_id=poll_id,
        algorithm=ALGORITHM,
        prizes=prizes,
        reserves_count=reserves,
        commitment=commitment(seed),
        seed=seed.hex(),
        external_entropy=external_entropy,
        entries_digest=digest,
        entries=chosen,
        winners=winners,
        reserves=reserve_ids,
        drawn_at=drawn_at,
        drawn_by=drawn_by,
    )


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed is exactly {SEED_BYTES} bytes, not {len(seed)}")
