"""Log lines: one JSON object each, with the vote id, and nothing personal in them."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.logs import JsonFormatter

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2b3RlciJ9.c2lnbmF0dXJlLXRleHQ"


def record(msg: str, *args: object, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("services.test", logging.INFO, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def line(made: logging.LogRecord) -> dict[str, Any]:
    text = JsonFormatter("vote_ingest").format(made)
    assert "\n" not in text
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_a_line_carries_the_service_the_message_and_the_vote_id() -> None:
    made = record("vote submitted", vote_id="01a2221a-7811-75a8-9fc6-5e8964f8a719", poll="p")
    assert line(made) == {
        "ts": datetime.fromtimestamp(made.created, UTC).isoformat(timespec="milliseconds"),
        "level": "info",
        "service": "vote_ingest",
        "logger": "services.test",
        "msg": "vote submitted",
        "vote_id": "01a2221a-7811-75a8-9fc6-5e8964f8a719",
        "poll": "p",
    }


def test_phone_numbers_and_tokens_are_masked_wherever_they_appear() -> None:
    made = record("entry from %s with %s", "13912345678", TOKEN, note="+86 139-1234-5678")
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        made.exc_info = sys.exc_info()
    logged = line(made)
    assert logged["msg"] == "entry from [phone] with [token]"
    assert logged["note"] == "[phone]"
    assert "[token]" in logged["exc"] and TOKEN not in logged["exc"]


def test_chinese_text_stays_readable_and_other_values_are_written_as_text() -> None:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    logged = line(record("投票成功", count=3, ok=True, at=at, where=object))
    assert logged["msg"] == "投票成功"
    assert (logged["count"], logged["ok"]) == (3, True)
    assert logged["at"] == "2026-11-28T12:00:00Z"
    assert logged["where"] == str(object)
    assert "投票成功" in JsonFormatter("s").format(record("投票成功"))


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_the_time_reads_as_datetime_writes_it_to_the_millisecond(created: float) -> None:
    formatter = JsonFormatter("s")
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert formatter.timestamp(created) == expected
    assert formatter.timestamp(created) == expected  # the second's text, reused
