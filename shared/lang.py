"""The languages every page speaks: Chinese by default (the audience is a Chinese
district), English on request. A visitor's choice is remembered in the `lang` cookie,
which the voting pages set and the staff console also reads (one origin)."""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["zh", "en"]
LANGS: Final[tuple[Lang, ...]] = ("zh", "en")
DEFAULT_LANG: Final[Lang] = "zh"
HTML_LANG: Final[dict[Lang, str]] = {"zh": "zh-CN", "en": "en"}
LANG_COOKIE: Final = "lang"


def parse_lang(value: str | None) -> Lang | None:
    """A supported language code, or None for anything else (never trust the raw value)."""
    if value == "zh":
        return "zh"
    if value == "en":
        return "en"
    return None


def choose_lang(asked: str | None, cookie: str | None) -> Lang:
    """A page's language: the one asked for (`?lang=`), else the remembered one (the
    `lang` cookie), else Chinese."""
    return parse_lang(asked) or parse_lang(cookie) or DEFAULT_LANG
