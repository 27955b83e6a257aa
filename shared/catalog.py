"""The poll catalog (contract section 3): loading, validation and the poll's clock.

A catalog that does not validate stops the service at start with a message naming the
poll and the field, so a typo in a ConfigMap never reaches voters.
"""

from __future__ import annotations

import ipaddress
from datetime import date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import CatalogInvalid
from shared.lang import DEFAULT_LANG, Lang

OPTION_LABELS: dict[str, dict[str, str]] = {
    "excellent": {"zh": "优", "en": "Excellent"},
    "good": {"zh": "良", "en": "Good"},
    "fair": {"zh": "中", "en": "Fair"},
    "poor": {"zh": "差", "en": "Poor"},
}

PollId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]


# A vote received just before the close may still be on its way from the edge to Kafka
# (the edge gives up on a publish after PUBLISH_TIMEOUT_SECONDS, 1.5 s by default and
# always less than this), where no consumer offset can show it yet.
# Results become final, and the draw may run, only this long after the close.
CLOSE_GRACE = timedelta(seconds=5)


class PollState(StrEnum):
    UPCOMING = "upcoming"
    OPEN = "open"
    CLOSED = "closed"


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a UTC offset, e.g. 2022-01-08T09:00:00+08:00")
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


class LotteryRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prizes: int = Field(ge=1, le=10_000)
    prize: str = Field(min_length=1, max_length=200)
    reserves: int = Field(default=0, ge=0, le=10_000)


class PollTexts(BaseModel):
    """A poll's texts in a language other than the catalog's own (Chinese). Each one is
    optional: what is not given is shown in the catalog's language."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str | None = Field(default=None, min_length=1, max_length=200)
    summary: str | None = Field(default=None, max_length=20_000)
    prize: str | None = Field(default=None, min_length=1, max_length=200)


class Translations(BaseModel):
    """Per page language; the catalog's own texts are Chinese, the default page's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    en: PollTexts | None = None


class Text(NamedTuple):
    """A text to show and the language it is written in (which may not be the page's)."""

    value: str
    lang: Lang


TextField = Literal["title", "summary", "prize"]


class RateLimits(BaseModel):
    """Sliding-window thresholds over received_at; generous for carrier NAT by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_seconds: int = Field(default=60, ge=1, le=86_400)
    per_voter: int = Field(default=10, ge=1)
    per_ip: int = Field(default=1_200, ge=1)
    per_subnet: int = Field(default=6_000, ge=1)
    allowlist: tuple[str, ...] = ()

    @field_validator("allowlist")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    def allows(self, ip: str) -> bool:
        """True when the address is on the allowlist (never rate limited by IP or subnet)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in ipaddress.ip_network(n, strict=False) for n in self.allowlist)


class Poll(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: PollId
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(default="", max_length=20_000)
    options: tuple[str, ...] = Field(min_length=2, max_length=10)
    opens_at: AwareDatetime
    closes_at: AwareDatetime
    timezone: str = "Asia/Shanghai"
    daily_limit: int = Field(default=1, ge=1, le=1_000)
    results: Literal["live", "after_close"] = "live"
    lottery: LotteryRules | None = None
    rate_limits: RateLimits = RateLimits()
    translations: Translations = Translations()

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [o for o in value if o not in OPTION_LABELS]
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; allowed: {list(OPTION_LABELS)}")
        if len(set(value)) != len(value):
            raise ValueError("options must not repeat")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _window(self) -> Poll:
        if self.closes_at <= self.opens_at:
            raise ValueError("closes_at must be after opens_at")
        return self

    @model_validator(mode="after")
    def _prize_translated_only_with_a_lottery(self) -> Poll:
        en = self.translations.en
        if en is not None and en.prize is not None and self.lottery is None:
            raise ValueError("translations.en.prize is given but the poll has no lottery")
        return self

    def text(self, field: TextField, lang: Lang) -> Text:
        """A poll text for a page in `lang`: its translation when the catalog has one,
        else the catalog's own text, with the language it is written in."""
        translated = self.translations.en if lang == "en" else None
        value = getattr(translated, field) if translated is not None else None
        if value is not None:
            return Text(value, lang)
        if field == "prize":
            return Text(self.lottery.prize if self.lottery else "", DEFAULT_LANG)
        return Text(self.title if field == "title" else self.summary, DEFAULT_LANG)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def state_at(self, instant: datetime) -> PollState:
        """Open from opens_at inclusive to closes_at exclusive: the close instant is closed."""
        if instant < self.opens_at:
            return PollState.UPCOMING
        if instant >= self.closes_at:
            return PollState.CLOSED
        return PollState.OPEN

    def day_of(self, instant: datetime) -> date:
        """The voting day of an instant: its date in the poll's time zone."""
        return instant.astimezone(self.zone).date()

    def next_day_starts(self, instant: datetime) -> datetime:
        """When the day after the instant's voting day begins, in the poll's time zone."""
        day = self.day_of(instant) + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=self.zone)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    polls: tuple[Poll, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        ids = [p.id for p in self.polls]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"poll ids must be unique; repeated: {repeated}")
        return self

    def get(self, poll_id: str) -> Poll | None:
        return next((p for p in self.polls if p.id == poll_id), None)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.polls)


def _describe(error: ValidationError, raw: object) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        where = ".".join(str(part) for part in loc)
        if len(loc) >= 2 and loc[0] == "polls" and isinstance(loc[1], int):
            polls = raw.get("polls") if isinstance(raw, dict) else None
            poll = polls[loc[1]] if isinstance(polls, list) and loc[1] < len(polls) else None
            name = poll.get("id") if isinstance(poll, dict) else None
            field = ".".join(str(part) for part in loc[2:]) or "(poll)"
            where = f"poll {name or '#' + str(loc[1])!s} field {field}"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_catalog(text: str, source: str = "<catalog>") -> Catalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogInvalid(f"{source}: not valid YAML: {exc}") from exc
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogInvalid(f"{source}: {_describe(exc, raw)}") from exc


def load_catalog(path: Path) -> Catalog:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogInvalid(f"{path}: cannot read the poll catalog: {exc}") from exc
    return parse_catalog(text, str(path))
