"""What clients send to the lottery: the entry form and the draw's options. No I/O.

Unknown fields are refused, not ignored, so a misspelt field is a visible 422. Messages
say what is wrong and never echo what was sent: a body holds a name and a phone number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.lottery.draw import EXTERNAL_ENTROPY_MAX_CHARS
from services.lottery.rules import InvalidName, InvalidPhone, normalise_phone, validate_name
from shared.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


class _EntryBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Generous raw bounds; the rules apply the real ones with clearer messages.
    name: str = Field(max_length=200)
    phone: str = Field(max_length=100)


class _DrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    external_entropy: str = Field(default="", max_length=EXTERNAL_ENTROPY_MAX_CHARS)


class _EraseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    confirm: str = Field(max_length=100)


@dataclass(frozen=True)
class EntryForm:
    name: str
    phone: str

    def __repr__(self) -> str:
        # Keeps a stray log line or traceback from printing the person's details.
        return "EntryForm(name=<hidden>, phone=<hidden>)"


def parse_entry(raw: Any) -> EntryForm:
    """The validated name and normalised phone; BadRequest with a stable code otherwise."""
    body = _validate(_EntryBody, raw)
    try:
        return EntryForm(name=validate_name(body.name), phone=normalise_phone(body.phone))
    except (InvalidName, InvalidPhone) as exc:
        raise BadRequest(str(exc), code=exc.code) from None


def parse_erase(raw: Any, poll_id: str) -> None:
    """An erasure names its poll again (`{"confirm": poll_id}`): it cannot be undone."""
    body = _validate(_EraseBody, raw)
    if body.confirm != poll_id:
        raise BadRequest(
            f"confirm must be the poll id {poll_id!r}: erasing cannot be undone",
            code="confirm_mismatch",
        )


def parse_draw(raw: Any) -> str:
    """The external entropy of a draw request; an absent body means none."""
    if raw is None:
        return ""
    body = _validate(_DrawBody, raw)
    return body.external_entropy


def _validate(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_body")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(_describe(exc), code="invalid_body") from None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
