"""Names and phones at rest: AES-GCM tokens, associated data, key rotation, sub-keys."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from services.lottery.pii import (
    PiiCipher,
    PiiDecryptError,
    PiiKeyInvalid,
    derive_subkey,
    entry_aad,
    key_id,
    parse_keyring,
)
from services.lottery.rules import ENTRY_ID_KEY_LABEL

OLD = hashlib.sha256(b"old key").digest()
NEW = hashlib.sha256(b"new key").digest()
AAD = entry_aad("futian-culture-2021", "0123456789abcdef0123456789abcdef", "phone")


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_a_token_opens_to_its_plaintext() -> None:
    cipher = PiiCipher(NEW)
    assert cipher.decrypt(cipher.encrypt("张三", aad=AAD), aad=AAD) == "张三"


def test_a_token_carries_version_key_id_and_nonce_and_hides_the_text() -> None:
    cipher = PiiCipher(NEW)
    token = cipher.encrypt("13812345678", aad=AAD)
    assert len(token) == 1 + 8 + 12 + len("13812345678") + 16
    assert token[:1] == b"\x01"
    assert token[1:9].hex() == key_id(NEW) == cipher.current_key_id
    assert b"13812345678" not in token


def test_each_encryption_uses_a_fresh_nonce() -> None:
    cipher = PiiCipher(NEW)
    assert cipher.encrypt("13812345678", aad=AAD) != cipher.encrypt("13812345678", aad=AAD)


def test_a_token_does_not_open_for_another_field_or_entry() -> None:
    cipher = PiiCipher(NEW)
    token = cipher.encrypt("13812345678", aad=AAD)
    for other in (
        entry_aad("futian-culture-2021", "0123456789abcdef0123456789abcdef", "name"),
        entry_aad("futian-culture-2021", "ffffffffffffffffffffffffffffffff", "phone"),
        entry_aad("another-poll", "0123456789abcdef0123456789abcdef", "phone"),
    ):
        with pytest.raises(PiiDecryptError, match="does not open"):
            cipher.decrypt(token, aad=other)


def test_associated_data_framing_is_unambiguous() -> None:
    assert entry_aad("a", "bc", "phone") != entry_aad("ab", "c", "phone")


def test_any_altered_byte_is_detected() -> None:
    cipher = PiiCipher(NEW)
    token = cipher.encrypt("李四", aad=AAD)
    for position in range(len(token)):
        altered = bytearray(token)
        altered[position] ^= 0x01
        with pytest.raises(PiiDecryptError):
            cipher.decrypt(bytes(altered), aad=AAD)


@pytest.mark.parametrize("token", [b"", b"\x01" + b"\x00" * 20, b"\x02" + b"\x00" * 60])
def test_truncated_or_unknown_version_tokens_are_refused(token: bytes) -> None:
    with pytest.raises(PiiDecryptError, match="known version"):
        PiiCipher(NEW).decrypt(token, aad=AAD)


def test_after_rotation_old_tokens_open_and_new_ones_use_the_new_key() -> None:
    old_token = PiiCipher(OLD).encrypt("王五", aad=AAD)
    rotated = parse_keyring(_b64(NEW), _b64(OLD))
    assert rotated.decrypt(old_token, aad=AAD) == "王五"
    assert rotated.needs_rotation(old_token)
    new_token = rotated.encrypt("王五", aad=AAD)
    assert not rotated.needs_rotation(new_token)
    assert rotated.key_id_of(new_token) == key_id(NEW)


def test_a_token_from_a_key_no_longer_in_the_keyring_names_the_key() -> None:
    old_token = PiiCipher(OLD).encrypt("王五", aad=AAD)
    with pytest.raises(PiiDecryptError, match=key_id(OLD)):
        PiiCipher(NEW).decrypt(old_token, aad=AAD)


def test_key_ids_are_the_short_hex_of_the_key_hash() -> None:
    assert key_id(NEW) == hashlib.sha256(NEW).hexdigest()[:16]
    assert key_id(NEW) != key_id(OLD)


def test_parse_keyring_accepts_both_base64_alphabets_and_separators() -> None:
    urlsafe_unpadded = base64.urlsafe_b64encode(OLD).decode().rstrip("=")
    third = hashlib.sha256(b"third").digest()
    cipher = parse_keyring(f"  {_b64(NEW)}\n", f"{urlsafe_unpadded}, {_b64(third)}")
    assert cipher.current_key_id == key_id(NEW)
    assert set(cipher.key_ids) == {key_id(NEW), key_id(OLD), key_id(third)}


def test_the_current_key_repeated_among_previous_keys_is_harmless() -> None:
    assert parse_keyring(_b64(NEW), _b64(NEW)).key_ids == (key_id(NEW),)


@pytest.mark.parametrize(
    ("current", "previous", "message"),
    [
        ("", "", "PII_KEY is empty"),
        ("not base64!", "", "PII_KEY is not valid base64"),
        (base64.b64encode(b"x" * 16).decode(), "", "PII_KEY must be base64 of 32 bytes, not 16"),
        (_b64(NEW), "%%%", r"PII_PREVIOUS_KEYS \(item 1\) is not valid base64"),
        (_b64(NEW), f"{_b64(OLD)},{_b64(b'y' * 31)}", r"PII_PREVIOUS_KEYS \(item 2\) must be"),
    ],
)
def test_malformed_keys_name_the_variable(current: str, previous: str, message: str) -> None:
    with pytest.raises(PiiKeyInvalid, match=message) as caught:
        parse_keyring(current, previous)
    assert isinstance(caught.value, ValueError)
    for secret in filter(None, (current, previous)):
        assert secret not in str(caught.value)


def _independent_hkdf(key: bytes, info: bytes) -> bytes:
    """RFC 5869 with no salt and one 32-byte block."""
    prk = hmac.new(b"\x00" * 32, key, "sha256").digest()
    return hmac.new(prk, info + b"\x01", "sha256").digest()


def test_subkeys_are_hkdf_sha256_of_the_key_and_label() -> None:
    subkey = derive_subkey(NEW, ENTRY_ID_KEY_LABEL)
    assert subkey == _independent_hkdf(NEW, b"votes/" + ENTRY_ID_KEY_LABEL.encode())
    assert len(subkey) == 32
    assert subkey != NEW
    assert derive_subkey(NEW, "another-label") != subkey
    assert derive_subkey(OLD, ENTRY_ID_KEY_LABEL) != subkey


def test_a_subkey_can_still_come_from_a_retired_key() -> None:
    rotated = parse_keyring(_b64(NEW), _b64(OLD))
    assert rotated.subkey(ENTRY_ID_KEY_LABEL) == derive_subkey(NEW, ENTRY_ID_KEY_LABEL)
    from_old = rotated.subkey(ENTRY_ID_KEY_LABEL, key_id=key_id(OLD))
    assert from_old == derive_subkey(OLD, ENTRY_ID_KEY_LABEL)
    with pytest.raises(PiiKeyInvalid, match="not in the keyring"):
        rotated.subkey(ENTRY_ID_KEY_LABEL, key_id="00" * 8)


def test_encryption_does_not_use_the_keyring_key_directly() -> None:
    token = PiiCipher(NEW).encrypt("x", aad=AAD)
    with pytest.raises(PiiDecryptError):
        PiiCipher(derive_subkey(NEW, ENTRY_ID_KEY_LABEL)).decrypt(token, aad=AAD)
    assert len({derive_subkey(NEW, "pii-encryption/v1"), NEW}) == 2


def test_the_cipher_never_shows_key_material() -> None:
    shown = repr(parse_keyring(_b64(NEW), _b64(OLD)))
    for key in (NEW, OLD):
        assert _b64(key) not in shown
        assert key.hex() not in shown
    assert key_id(NEW) in shown


def test_keys_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(PiiKeyInvalid, match="32 bytes"):
        PiiCipher(b"k" * 16)
    with pytest.raises(ValueError, match="32 bytes"):
        derive_subkey(b"k" * 31, "label")
