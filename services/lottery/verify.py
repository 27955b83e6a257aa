"""Re-check a published prize draw from its audit record alone (contract section 8).

    python -m services.lottery.verify FILE      (FILE may be - for standard input)

Exit status: 0 and "OK ..." when the commitment, the entries digest, the winners and the
reserves all recompute; 1 and one line per difference otherwise; 2 when the file cannot
be read or is not an audit record. Compare the commitment printed here with the one
published when voting opened: a matching record proves the seed was fixed beforehand.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from services.lottery.draw import (
    ALGORITHM,
    AuditRecord,
    commitment,
    entries_digest,
    final_key,
    select,
)

EXIT_OK = 0
EXIT_DIFFERS = 1
EXIT_UNREADABLE = 2


class UnreadableRecord(ValueError):
    """The input is not a readable audit record (exit status 2)."""


def verify_record(record: AuditRecord) -> list[str]:
    """Every way the record disagrees with the published rules; empty when it re-checks."""
    if record.algorithm != ALGORITHM:
        return [f"algorithm: {record.algorithm!r} is not {ALGORITHM!r}, which this implements"]
    differences = _check_commitment(record) + _check_entries(record)
    if _repeated_ids(record):
        return [*differences, "winners, reserves: not recomputed, the entries repeat ids"]
    return differences + _check_digest(record) + _check_selection(record)


def _check_commitment(record: AuditRecord) -> list[str]:
    expected = commitment(bytes.fromhex(record.seed))
    if record.commitment == expected:
        return []
    return [f"commitment: the record says {record.commitment}, sha256(seed) is {expected}"]


def _repeated_ids(record: AuditRecord) -> list[str]:
    counts = Counter(e.entry_id for e in record.entries)
    return sorted(entry_id for entry_id, n in counts.items() if n > 1)


def _check_entries(record: AuditRecord) -> list[str]:
    repeated = [f"entries: {i} is listed more than once" for i in _repeated_ids(record)]
    ineligible = [
        f"entries: {e.entry_id} has weight 0, which is not eligible"
        for e in record.entries
        if e.weight == 0
    ]
    return repeated + ineligible


def _check_digest(record: AuditRecord) -> list[str]:
    expected = entries_digest(record.entries)
    if record.entries_digest == expected:
        return []
    return [f"entries_digest: the record says {record.entries_digest}, the entries give {expected}"]


def _check_selection(record: AuditRecord) -> list[str]:
    # The draw is keyed by the digest of the entries as listed, so a record whose digest
    # field alone was altered still recomputes its winners, and is flagged only there.
    final = final_key(
        bytes.fromhex(record.seed), entries_digest(record.entries), record.external_entropy
    )
    winners, reserves = select(final, record.entries, record.prizes, record.reserves_count)
    return _compare("winners", record.winners, winners) + _compare(
        "reserves", record.reserves, reserves
    )


def _compare(name: str, stated: Sequence[str], expected: Sequence[str]) -> list[str]:
    if list(stated) == list(expected):
        return []
    if len(stated) != len(expected):
        return [f"{name}: the record lists {len(stated)}, the rules give {len(expected)}"]
    rank, mine, theirs = next(
        (i, a, b) for i, (a, b) in enumerate(zip(stated, expected, strict=True), 1) if a != b
    )
    return [f"{name}: rank {rank} is {mine} in the record, {theirs} when recomputed"]


def load_record(text: str | bytes) -> AuditRecord:
    try:
        return AuditRecord.model_validate_json(text)
    except ValidationError as exc:
        raise UnreadableRecord(_describe(exc)) from exc


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "(record)"
        problems.append(f"{where}: {item['msg']}")
    return "not an audit record: " + "; ".join(problems[:10])


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UnreadableRecord(f"cannot read: {exc.strerror or exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.lottery.verify",
        description="Recompute a prize draw from its published audit record.",
    )
    parser.add_argument("file", metavar="FILE", help="the audit record (JSON), - for stdin")
    path = parser.parse_args(argv).file
    try:
        record = load_record(_read(path))
    except UnreadableRecord as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    differences = verify_record(record)
    for line in differences:
        print(f"DIFFERS {line}")
    if differences:
        return EXIT_DIFFERS
    print(_summary(record))
    return EXIT_OK


def _summary(record: AuditRecord) -> str:
    return (
        f"OK {record.poll_id}: commitment {record.commitment} matches the seed; "
        f"{len(record.entries)} entries, {len(record.winners)} winners and "
        f"{len(record.reserves)} reserves recompute"
    )


if __name__ == "__main__":
    sys.exit(main())
