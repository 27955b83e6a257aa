"""The edge's own decisions, pure: the shape of a vote, the poll window at receipt and
the per-address limit on new sessions. Captcha answers and daily limits are judged by
antifraud, never here.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.catalog import Poll, PollState
from shared.errors import BadRequest, Forbidden

_CAPTCHA_ID = re.compile(r"^[A-Za-z0-9_.-]{8,128}$")
_ANSWER = re.compile(r"^[A-Za-z0-9]{1,16}$")


class VoteBody(BaseModel):
    """What a voter sends; unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    choice: str = Field(min_length=1, max_length=32)
    captcha_id: str = Field(min_length=1, max_length=128)
    captcha_answer: str = Field(min_length=1, max_length=16)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_vote(raw: Any, poll: Poll) -> VoteBody:
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    try:
        body = VoteBody.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(_describe(exc), code="invalid_body") from exc
    if body.choice not in poll.options:
        raise BadRequest(
            f"choice must be one of {list(poll.options)}",
            code="invalid_choice",
            extra={"options": list(poll.options)},
        )
    if not _CAPTCHA_ID.match(body.captcha_id) or not _ANSWER.match(body.captcha_answer.strip()):
        raise BadRequest("the captcha id or answer is malformed", code="captcha_malformed")
    return body


def require_open(poll: Poll, received_at: datetime) -> None:
    state = poll.state_at(received_at)
    if state is PollState.UPCOMING:
        raise Forbidden("voting has not opened yet", code="poll_not_open")
    if state is PollState.CLOSED:
        raise Forbidden("voting has closed", code="poll_closed")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Per-key token buckets with a bounded number of keys (oldest evicted first)."""

    def __init__(self, rate_per_second: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1
        if allowed:
            bucket.tokens -= 1
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
