"""Tally's fast decoding of votes.accepted refuses exactly what the event model refuses."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from aiokafka import ConsumerRecord

from services.tally.consumer import AcceptedVote
from shared.consuming import decode_batch
from shared.events import VoteAccepted
from tests.support.kafka import consumed

GOOD = {
    "vote_id": "0f8c3b6e-0a4c-4f59-9a53-0a4a1f3f7d21",
    "poll_id": "futian-culture-2021",
    "choice": "good",
    "voter_id": "v-1",
    "day": "2021-12-21",
    "received_at": "2021-12-21T01:02:03.456789Z",
    "decided_at": "2021-12-21T01:02:04Z",
}


def _variant(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


CASES = [
    _variant(),
    _variant(extra_field="ignored"),
    _variant(received_at="2021-12-21T09:02:03+08:00"),
    _variant(received_at="2021-12-21T01:02:03"),  # no offset
    _variant(decided_at="yesterday"),
    _variant(day="2021-13-01"),
    _variant(vote_id=1),
    _variant(choice=None),
    _variant(poll_id=...),
    _variant(voter_id=...),
    b"{not json",
    b"[]",
    b"",
]


def _record(value: bytes, offset: int) -> ConsumerRecord[bytes, bytes]:
    return consumed(value, offset=offset, key=b"v-1")


def _accepted_by_model(value: bytes) -> bool:
    try:
        VoteAccepted.model_validate_json(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("value", CASES)
def test_the_fast_decoder_agrees_with_the_event_model(value: bytes) -> None:
    decoded, poisoned = decode_batch([_record(value, 7)], AcceptedVote, "tally")
    assert bool(decoded) == _accepted_by_model(value)
    assert len(decoded) + len(poisoned) == 1
    for letter in poisoned:
        assert (letter.offset, letter.consumer) == (7, "tally")


def test_decoded_votes_carry_the_events_values() -> None:
    [vote], _ = decode_batch([_record(_variant(), 0)], AcceptedVote, "tally")
    model = VoteAccepted.model_validate_json(_variant())
    assert (vote.vote_id, vote.poll_id, vote.choice, vote.voter_id) == (
        model.vote_id,
        model.poll_id,
        model.choice,
        model.voter_id,
    )
    assert vote.day == model.day == date(2021, 12, 21)
    assert vote.received_at == model.received_at == datetime(2021, 12, 21, 1, 2, 3, 456789, UTC)


def test_the_fast_decoder_has_the_event_models_fields() -> None:
    assert set(AcceptedVote.__struct_fields__) == set(VoteAccepted.model_fields)


def test_a_batch_keeps_its_good_records_around_a_poisoned_one() -> None:
    values = [_variant(vote_id="a"), b"{not json", _variant(vote_id="b")]
    records = [_record(v, i) for i, v in enumerate(values)]
    decoded, poisoned = decode_batch(records, AcceptedVote, "tally")
    assert [v.vote_id for v in decoded] == ["a", "b"]
    assert [p.offset for p in poisoned] == [1]
