"""The draw of contract section 8: exact arithmetic, ranking rules and fairness."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.lottery import draw
from services.lottery.draw import ALGORITHM, AuditRecord, Entry

# The fixed vector: expected values were produced by `_independent_*` below, which
# follows the contract text and shares no code with services.lottery.draw.
SEED = bytes(range(32))
ENTROPY = "深证成指 2022-01-10 收盘 14012.34"
VECTOR = {"f00d": 4, "0b1e": 1, "c0de": 2, "beef": 3, "zero": 0, "a11a": 1}
COMMITMENT = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
DIGEST = "b618bc0c899208bd3700b39f72d41ba9cc278d16f1d9f22810d0ae55001e54c2"
FINAL = "117113cc2396e308d7ebe430f3b903abf98bb9978e6ab9f9012054872646f8c6"
KEYS = {
    "beef": -0.03712809013547389,
    "a11a": -0.07446377515466733,
    "0b1e": -0.17195036545376416,
    "f00d": -0.19320473694964843,
    "c0de": -0.4211389982967349,
}
DRAWN_AT = datetime(2022, 1, 10, 10, 0, tzinfo=timezone(timedelta(hours=8)))


def _independent_digest(weights: dict[str, int]) -> str:
    lines = "".join(f"{i}:{w}\n" for i, w in sorted(weights.items()) if w > 0)
    return hashlib.sha256(lines.encode()).hexdigest()


def _independent_keys(seed: bytes, weights: dict[str, int], entropy: str) -> dict[str, float]:
    final = hashlib.sha256(seed + _independent_digest(weights).encode() + entropy.encode())
    keys = {}
    for entry_id, weight in weights.items():
        if weight > 0:
            hexdigest = hmac.new(final.digest(), entry_id.encode(), "sha256").hexdigest()
            top53 = int(hexdigest[:14], 16) >> 3
            # (top53 + 0.5) / 2**53 as one rounding of (2*top53 + 1) / 2**54.
            keys[entry_id] = math.log(math.ldexp(float(2 * top53 + 1), -54)) / weight
    return keys


def _entries(weights: dict[str, int]) -> list[Entry]:
    return [Entry(entry_id=i, weight=w) for i, w in weights.items()]


def _record(weights: dict[str, int], prizes: int = 2, reserves: int = 2) -> AuditRecord:
    return draw.draw(
        "poll-1", SEED, _entries(weights), prizes, reserves, ENTROPY, DRAWN_AT, "staff"
    )


def test_the_independent_computation_gives_the_pinned_vector() -> None:
    assert _independent_digest(VECTOR) == DIGEST
    assert _independent_keys(SEED, VECTOR, ENTROPY) == KEYS


def test_commitment_digest_and_final_key_match_the_vector() -> None:
    assert draw.commitment(SEED) == COMMITMENT
    assert draw.entries_digest(_entries(VECTOR)) == DIGEST
    assert draw.final_key(SEED, DIGEST, ENTROPY).hex() == FINAL


def test_each_entry_key_matches_the_vector_exactly() -> None:
    final = bytes.fromhex(FINAL)
    assert {i: draw.entry_key(final, i, VECTOR[i]) for i in KEYS} == KEYS


def test_the_draw_ranks_the_vector_by_largest_key() -> None:
    record = _record(VECTOR, prizes=2, reserves=2)
    assert record.winners == ("beef", "a11a")
    assert record.reserves == ("0b1e", "f00d")
    assert record.entries_digest == DIGEST
    assert record.commitment == COMMITMENT
    assert record.seed == SEED.hex()


def test_equal_keys_go_to_the_smaller_entry_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draw, "entry_key", lambda final, entry_id, weight: -1.0 / weight)
    weights = {"d": 2, "b": 1, "c": 2, "a": 1, "e": 2}
    winners, reserves = draw.select(b"k" * 32, _entries(weights), prizes=2, reserves=2)
    assert winners == ("c", "d")
    assert reserves == ("e", "a")


def test_weight_zero_entries_are_neither_drawn_nor_listed() -> None:
    weights = {"a": 0, "b": 1, "c": 0, "d": 2}
    record = _record(weights, prizes=5, reserves=3)
    assert set(record.winners) == {"b", "d"}
    assert record.reserves == ()
    assert [e.entry_id for e in record.entries] == ["b", "d"]
    assert record.entries_digest == draw.entries_digest(_entries({"b": 1, "d": 2}))


def test_fewer_entries_than_prizes_means_every_entry_wins_in_rank_order() -> None:
    weights = {"x1": 3, "x2": 1, "x3": 2}
    record = _record(weights, prizes=30, reserves=10)
    final = draw.final_key(SEED, record.entries_digest, ENTROPY)
    assert record.winners == tuple(draw.ranking(final, _entries(weights)))
    assert sorted(record.winners) == ["x1", "x2", "x3"]
    assert record.reserves == ()


def test_no_eligible_entries_draws_nobody() -> None:
    record = _record({"a": 0}, prizes=3, reserves=1)
    assert (record.winners, record.reserves, record.entries) == ((), (), ())


def test_reserves_follow_the_winners_in_the_same_ranking() -> None:
    weights = {f"id{n:02d}": 1 + n % 4 for n in range(40)}
    record = _record(weights, prizes=5, reserves=7)
    final = draw.final_key(SEED, record.entries_digest, ENTROPY)
    ranked = draw.ranking(final, _entries(weights))
    assert record.winners == tuple(ranked[:5])
    assert record.reserves == tuple(ranked[5:12])
    assert not set(record.winners) & set(record.reserves)


def test_external_entropy_changes_the_result() -> None:
    weights = {f"id{n:02d}": 1 for n in range(40)}
    digest = draw.entries_digest(_entries(weights))
    first = draw.ranking(draw.final_key(SEED, digest, ""), _entries(weights))
    second = draw.ranking(draw.final_key(SEED, digest, "14012.34"), _entries(weights))
    assert first != second
    assert sorted(first) == sorted(second)


def test_a_changed_weight_changes_the_digest() -> None:
    changed = {**VECTOR, "c0de": 3}
    assert draw.entries_digest(_entries(changed)) != DIGEST


def test_repeated_entry_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        draw.entries_digest([Entry(entry_id="a", weight=1), Entry(entry_id="a", weight=2)])


def test_a_seed_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        draw.commitment(b"short")


def test_new_seeds_are_32_fresh_bytes() -> None:
    seeds = {draw.new_seed() for _ in range(8)}
    assert len(seeds) == 8
    assert all(len(s) == 32 for s in seeds)


@pytest.mark.parametrize("bad", ["a:b", "a b", "a\nb", "", "é"])
def test_entry_ids_that_could_forge_a_digest_line_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        Entry(entry_id=bad, weight=1)


def test_the_audit_record_holds_the_contract_fields_and_round_trips() -> None:
    record = _record(VECTOR)
    data = json.loads(record.model_dump_json())
    assert list(data) == [
        "poll_id", "algorithm", "prizes", "reserves_count", "commitment", "seed",
        "external_entropy", "entries_digest", "entries", "winners", "reserves",
        "drawn_at", "drawn_by",
    ]  # fmt: skip
    assert data["algorithm"] == ALGORITHM
    assert data["drawn_at"] == "2022-01-10T02:00:00.000000Z"
    assert data["entries"][0] == {"entry_id": "0b1e", "weight": 1}
    assert AuditRecord.model_validate_json(record.model_dump_json()) == record


def test_the_audit_record_is_frozen() -> None:
    record = _record(VECTOR)
    with pytest.raises(ValidationError):
        record.winners = ("f00d",)  # type: ignore[misc]


_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(
    weights=st.dictionaries(_ids, st.integers(0, 6), max_size=12),
    prizes=st.integers(1, 5),
    reserves=st.integers(0, 3),
    entropy=st.text(max_size=10),
    data=st.data(),
)
def test_the_draw_is_a_permutation_invariant_function_of_its_inputs(
    weights: dict[str, int], prizes: int, reserves: int, entropy: str, data: st.DataObject
) -> None:
    entries = _entries(weights)
    shuffled = data.draw(st.permutations(entries))

    def run(listed: list[Entry]) -> AuditRecord:
        return draw.draw("poll-1", SEED, listed, prizes, reserves, entropy, DRAWN_AT, "staff")

    assert run(shuffled) == run(entries)


@settings(max_examples=40, deadline=None)
@given(weights=st.dictionaries(_ids, st.integers(1, 6), min_size=1, max_size=10))
def test_adding_weight_zero_entries_changes_nothing(weights: dict[str, int]) -> None:
    padded = {**weights, **{f"z{i}": 0 for i in range(3) if f"z{i}" not in weights}}
    assert _record(padded) == _record(weights)


# Successive sampling, checked against exact probabilities over many seeds.

STAT_WEIGHTS = {"e1": 1, "e2": 2, "e3": 3, "e4": 4, "e5": 5}
STAT_DRAWS = 20_000


def _exact_probabilities(weights: dict[str, int], picks: int) -> tuple[dict[str, Fraction], ...]:
    """(P(first pick), P(among the picks)) by enumerating every ordered sequence of picks."""
    first = dict.fromkeys(weights, Fraction(0))
    chosen = dict.fromkeys(weights, Fraction(0))
    for sequence in itertools.permutations(weights, picks):
        probability, remaining = Fraction(1), sum(weights.values())
        for entry_id in sequence:
            probability *= Fraction(weights[entry_id], remaining)
            remaining -= weights[entry_id]
        first[sequence[0]] += probability
        for entry_id in sequence:
            chosen[entry_id] += probability
    return first, chosen


def _tolerance(p: float, n: int) -> float:
    return 5 * math.sqrt(n * p * (1 - p))


def test_win_frequencies_match_exact_successive_sampling() -> None:
    entries = _entries(STAT_WEIGHTS)
    digest = draw.entries_digest(entries)
    first_counts = dict.fromkeys(STAT_WEIGHTS, 0)
    win_counts = dict.fromkeys(STAT_WEIGHTS, 0)
    for n in range(STAT_DRAWS):
        seed = hashlib.sha256(b"statistical-test/%d" % n).digest()
        winners, _ = draw.select(draw.final_key(seed, digest, ""), entries, prizes=2, reserves=0)
        first_counts[winners[0]] += 1
        for entry_id in winners:
            win_counts[entry_id] += 1

    p_first, p_win = _exact_probabilities(STAT_WEIGHTS, picks=2)
    assert sum(p_win.values()) == 2
    assert p_first["e5"] == Fraction(5, 15)
    for entry_id in STAT_WEIGHTS:
        for counts, exact in ((first_counts, p_first), (win_counts, p_win)):
            expected = float(exact[entry_id]) * STAT_DRAWS
            allowed = _tolerance(float(exact[entry_id]), STAT_DRAWS)
            assert abs(counts[entry_id] - expected) <= allowed, (entry_id, counts, expected)


def test_the_statistical_test_can_tell_weighted_from_uniform() -> None:
    _, p_win = _exact_probabilities(STAT_WEIGHTS, picks=2)
    uniform = 2 / len(STAT_WEIGHTS) * STAT_DRAWS
    for entry_id in ("e1", "e5"):
        expected = float(p_win[entry_id]) * STAT_DRAWS
        assert abs(uniform - expected) > 2 * _tolerance(float(p_win[entry_id]), STAT_DRAWS)


def test_drawn_at_must_carry_an_offset() -> None:
    with pytest.raises(ValidationError):
        draw.draw("poll-1", SEED, [], 1, 0, "", datetime(2022, 1, 10), "staff")


def test_drawn_at_is_stored_in_utc() -> None:
    assert _record(VECTOR).drawn_at == datetime(2022, 1, 10, 2, 0, tzinfo=UTC)
