"""Who may enter the prize draw and how entries are named (contract section 8). No I/O.

    ValueError
    ├── InvalidPhone     invalid_phone   (answered 422: not a mainland mobile number)
    └── InvalidName      invalid_name    (answered 422)

An entry is one mainland mobile number per poll. Its public name, `entry_id`, is a keyed
hash: the audit record is published, and mobile numbers are few enough (about 10**10)
that an unkeyed hash would be reversed by enumerating them all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import unicodedata
from typing import ClassVar, Final

ENTRY_ID_KEY_LABEL: Final = "lottery-entry-id/v1"
"""HKDF label of the entry-id key, derived from PII_KEY (see `pii.PiiCipher.subkey`)."""

ENTRY_ID_HEX_CHARS: Final = 32
"""128 bits: collisions need about 2**64 numbers, and ids stay short in URLs and audits."""

NAME_MAX_CHARS: Final = 50
_PHONE_MAX_RAW_CHARS: Final = 40
_ENTRY_ID_DOMAIN: Final = b"votes/lottery/entry-id/v1\x00"

# Separators people type or paste between digit groups; NFKC has already folded the
# full-width forms (U+FF08, U+FF0D, U+3000, ...) into these ASCII ones. Zero-width
# characters come along when a number is copied out of a chat message.
_PHONE_SEPARATORS: Final = re.compile(r"[\s\-\u2010-\u2015\u2212.()\[\]/\u200b-\u200d\ufeff]")
# [0-9], not \d: digits of other scripts are refused rather than read as a number.
_PHONE_SHAPE: Final = re.compile(r"(?:\+86|0086|86)?(1[3-9][0-9]{9})")
_MASKED_PHONE: Final = re.compile(r"1[3-9][0-9]\*{4}[0-9]{4}")


class InvalidPhone(ValueError):
    code: ClassVar[str] = "invalid_phone"


class InvalidName(ValueError):
    code: ClassVar[str] = "invalid_name"


def normalise_phone(raw: str) -> str:
    """The 11-digit mainland mobile number in `raw`, or InvalidPhone.

    Accepts a +86 / 0086 / 86 country prefix, full-width characters, and spaces, dashes,
    dots, slashes or parentheses between digits, so "(+86) 138-1234 5678", also in full-width
    forms, is 13812345678.
    """
    if len(raw) > _PHONE_MAX_RAW_CHARS:
        raise InvalidPhone(f"a mobile number has at most {_PHONE_MAX_RAW_CHARS} characters")
    compact = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    match = _PHONE_SHAPE.fullmatch(compact)
    if match is None:
        raise InvalidPhone(
            "not a mainland China mobile number: expected 11 digits starting with 13-19, "
            "optionally after +86"
        )
    return match.group(1)


def mask_phone(phone: str) -> str:
    """'13812345678' -> '138****5678': enough for a winner to recognise their number.

    A masked number stays as it is: that is all an entry keeps once details are erased.
    """
    if _MASKED_PHONE.fullmatch(phone):
        return phone
    digits = normalise_phone(phone)
    return f"{digits[:3]}****{digits[7:]}"


def mask_name(name: str) -> str:
    """Keep the first character only: '张三' -> '张*', 'Alice Wong' -> 'A*********'.

    A one-character name still gets one '*' so the mask never shows a whole name.
    """
    text = name.strip()
    if not text:
        return "*"
    return text[0] + "*" * max(1, len(text) - 1)


def validate_name(raw: str) -> str:
    """The name as stored: NFC, trimmed, inner runs of spaces folded to one space.

    Control, format (e.g. bidi overrides), private-use, unassigned and line-separator
    characters are refused: names are shown to staff and exported for prize delivery,
    where such characters can disguise or reorder what is displayed.
    """
    text = unicodedata.normalize("NFC", raw).strip()
    # Checked before folding whitespace: str.split() would turn tabs, line separators
    # and some control characters into spaces and hide them.
    bad = next((c for c in text if _is_forbidden_in_name(c)), None)
    if bad is not None:
        raise InvalidName(f"the name contains a character that is not allowed (U+{ord(bad):04X})")
    name = " ".join(text.split())
    if not name:
        raise InvalidName("a name is required")
    if len(name) > NAME_MAX_CHARS:
        raise InvalidName(f"a name has at most {NAME_MAX_CHARS} characters")
    return name


def _is_forbidden_in_name(char: str) -> bool:
    category = unicodedata.category(char)
    return category.startswith("C") or category in ("Zl", "Zp")


def entry_id(key: bytes, poll_id: str, phone: str) -> str:
    """HMAC-SHA256 of poll and normalised phone, first 32 hex characters.

    Each part is length-prefixed, so no two (poll, phone) pairs share a message, and the
    poll is part of it, so one number's entries in two polls cannot be linked.
    """
    if len(key) < 32:
        raise ValueError("the entry-id key must be at least 32 bytes")
    message = (
        _ENTRY_ID_DOMAIN + _framed(poll_id.encode()) + _framed(normalise_phone(phone).encode())
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:ENTRY_ID_HEX_CHARS]


def _framed(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part
