"""Who may enter: phone normalisation and masking, names, and entry ids."""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.lottery.rules import (
    InvalidName,
    InvalidPhone,
    entry_id,
    mask_name,
    mask_phone,
    normalise_phone,
    validate_name,
)

KEY = hashlib.sha256(b"entry-id-test-key").digest()


def _fw(text: str) -> str:
    """The full-width form of printable ASCII, as Chinese input methods type it."""
    return "".join(_fw_char(c) for c in text)


def _fw_char(char: str) -> str:
    if char == " ":
        return "\u3000"
    return chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char


@pytest.mark.parametrize(
    "raw",
    [
        "13812345678",
        "138 1234 5678",
        "138-1234-5678",
        "138.1234.5678",
        "+86 138 1234 5678",
        "+86-13812345678",
        "(+86) 138 1234 5678",
        "+86 (138) 1234-5678",
        "0086 13812345678",
        "8613812345678",
        "86 138 1234 5678",
        _fw("13812345678"),
        _fw("+86 138-1234-5678"),
        _fw("(+86)13812345678"),
        _fw("(+86)") + "138 1234 5678",
        "  13812345678\n",
        "138\u200b1234\u200b5678",
        "138\u20141234\u20145678",
    ],
)
def test_accepted_forms_normalise_to_eleven_digits(raw: str) -> None:
    assert normalise_phone(raw) == "13812345678"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "12812345678",  # second digit 2: not a mobile range
        "10812345678",
        "23812345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "861381234567",  # 86 then only 10 digits
        "+8513812345678",
        "+1 13812345678",
        "+86+8613812345678",
        "008613812345678 ext 1",
        "0013812345678",
        "1381234567a",
        "١٣٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits are digits, but not a phone number here
        "138-1234-5678" + " " * 40,
        "phone: 13812345678",
    ],
)
def test_other_inputs_are_refused_with_a_clear_message(raw: str) -> None:
    with pytest.raises(InvalidPhone, match="mobile number"):
        normalise_phone(raw)


def test_invalid_phone_is_a_value_error_with_a_stable_code() -> None:
    assert issubclass(InvalidPhone, ValueError)
    assert InvalidPhone.code == "invalid_phone"


_mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
_separators = st.sampled_from(["", "", " ", "-", ".", "\u3000", "\uff0d"])


@st.composite
def _written(draw: st.DrawFn) -> tuple[str, str]:
    """A mobile number as a person might type it, with the number it stands for."""
    digits = draw(_mobiles)
    prefix = draw(st.sampled_from(["", "+86", "0086", "86", "(+86)", "+86 "]))
    body = "".join(d + draw(_separators) for d in digits).rstrip(" -.\u3000\uff0d")
    text = prefix + body
    if draw(st.booleans()):
        text = _fw(text)
    return text, digits


@given(_written())
def test_typed_forms_normalise_to_their_number(case: tuple[str, str]) -> None:
    text, digits = case
    assert normalise_phone(text) == digits


@given(st.one_of(_written().map(lambda case: case[0]), st.text(max_size=20)))
def test_normalising_is_idempotent(text: str) -> None:
    try:
        once = normalise_phone(text)
    except InvalidPhone:
        return
    assert re.fullmatch(r"1[3-9][0-9]{9}", once)
    assert normalise_phone(once) == once


def test_phones_are_masked_to_prefix_and_last_four() -> None:
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("+86 139-0000-1234") == "139****1234"


def test_masking_refuses_what_is_not_a_phone() -> None:
    with pytest.raises(InvalidPhone):
        mask_phone("1234")
    with pytest.raises(InvalidPhone):
        mask_phone("123****5678")  # masked, but never a mainland mobile number


@given(
    st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
    st.text(min_size=1, max_size=20).filter(str.strip),  # names are stored non-blank
)
def test_masking_again_changes_nothing(phone: str, name: str) -> None:
    # Once details are erased, an entry holds only the masked forms, and is shown masked.
    assert mask_phone(mask_phone(phone)) == mask_phone(phone)
    assert mask_name(mask_name(name)) == mask_name(name)


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("欧阳娜娜", "欧***"),
        ("Alice Wong", "A*********"),
        ("张", "张*"),
        ("  李四  ", "李*"),
        ("", "*"),
    ],
)
def test_names_keep_only_their_first_character(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  张三 ", "张三"),
        ("Alice \u3000  Wong", "Alice Wong"),
        ("Jose\u0301", "José"),
        ("x" * 50, "x" * 50),
        ("阿依古丽·买买提", "阿依古丽·买买提"),
    ],
)
def test_valid_names_are_stored_normalised(raw: str, stored: str) -> None:
    assert validate_name(raw) == stored


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "required"),
        (" \u3000 ", "required"),
        ("x" * 51, "at most 50"),
        ("a\x00b", "U\\+0000"),
        ("a\x1bb", "U\\+001B"),
        ("a\u202eb", "U\\+202E"),  # right-to-left override
        ("a\u2028b", "U\\+2028"),
        ("Alice\tWong", "U\\+0009"),
        ("a\x1fb", "U\\+001F"),
        ("a\ue000b", "U\\+E000"),
    ],
)
def test_invalid_names_are_refused(raw: str, message: str) -> None:
    with pytest.raises(InvalidName, match=message):
        validate_name(raw)


def _independent_entry_id(key: bytes, poll_id: str, phone: str) -> str:
    message = b"votes/lottery/entry-id/v1\x00"
    for part in (poll_id.encode(), phone.encode()):
        message += struct.pack(">I", len(part)) + part
    return hmac.new(key, message, "sha256").hexdigest()[:32]


def test_entry_id_is_the_framed_hmac_of_poll_and_number() -> None:
    expected = _independent_entry_id(KEY, "futian-culture-2021", "13812345678")
    assert entry_id(KEY, "futian-culture-2021", "13812345678") == expected
    assert re.fullmatch(r"[0-9a-f]{32}", expected)


def test_entry_id_is_the_same_however_the_number_is_written() -> None:
    ids = {
        entry_id(KEY, "p", raw) for raw in ("13812345678", "+86 138-1234-5678", _fw("13812345678"))
    }
    assert len(ids) == 1


def test_entry_id_depends_on_poll_number_and_key() -> None:
    base = entry_id(KEY, "poll-a", "13812345678")
    assert entry_id(KEY, "poll-b", "13812345678") != base
    assert entry_id(KEY, "poll-a", "13812345679") != base
    assert entry_id(hashlib.sha256(b"other").digest(), "poll-a", "13812345678") != base


def test_entry_id_refuses_a_short_key_and_a_bad_number() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        entry_id(b"short", "p", "13812345678")
    with pytest.raises(InvalidPhone):
        entry_id(KEY, "p", "12345")
