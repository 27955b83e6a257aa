"""Encryption at rest of entrants' names and phone numbers, with key rotation. No I/O.

    ValueError
    ├── PiiKeyInvalid       a malformed PII_KEY / PII_PREVIOUS_KEYS (stops the service)
    └── PiiDecryptError     a token that no known key opens with this associated data

A keyring is the current key (PII_KEY) plus retired ones (PII_PREVIOUS_KEYS), each given
as base64 of 32 random bytes. New tokens always use the current key; retired keys still
open old tokens, so a key can be rotated without rewriting stored rows first.

The keys themselves are only ever HKDF input: AES-GCM and the entry-id HMAC each get
their own derived key, so a weakness in one use cannot leak into the other.

Token layout (bytes, for a BYTEA column):

    version (1) | key id (8) | nonce (12) | ciphertext + GCM tag (16)

The version and key id are authenticated along with the caller's associated data, which
should name the row and field (`entry_aad`), so a token copied into another entry or
swapped between the name and phone columns no longer opens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 8
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
_VERSION: Final = b"\x01"
_HEADER_BYTES: Final = 1 + KEY_ID_BYTES
_BODY_STARTS: Final = _HEADER_BYTES + NONCE_BYTES
_ENCRYPTION_LABEL: Final = "pii-encryption/v1"
_HKDF_INFO_PREFIX: Final = b"votes/"
_KEY_SEPARATORS: Final = re.compile(r"[\s,]+")


class PiiKeyInvalid(ValueError):
    pass


class PiiDecryptError(ValueError):
    pass


def key_id(key: bytes) -> str:
    """Short public name of a key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES].hex()


def derive_subkey(key: bytes, label: str) -> bytes:
    """A 32-byte key for one purpose, derived from a keyring key by HKDF-SHA256."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a keyring key is exactly {KEY_BYTES} bytes, not {len(key)}")
    info = _HKDF_INFO_PREFIX + label.encode("utf-8")
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def entry_aad(poll_id: str, entry_id: str, field: str) -> bytes:
    """Associated data binding a token to one field of one entry of one poll."""
    return b"".join(_framed(part.encode("utf-8")) for part in ("pii/v1", poll_id, entry_id, field))


class PiiCipher:
    """AES-256-GCM over a keyring; see the module docstring for the token layout."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self._keys: dict[str, bytes] = {}
        self._aeads: dict[str, AESGCM] = {}
        for key in (current, *previous):
            self._add(key)
        self.current_key_id = key_id(current)

    def _add(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise PiiKeyInvalid(f"a keyring key is exactly {KEY_BYTES} bytes, not {len(key)}")
        kid = key_id(key)
        if self._keys.get(kid, key) != key:
            raise PiiKeyInvalid(f"two different keys share the key id {kid}")
        self._keys[kid] = key
        self._aeads[kid] = AESGCM(derive_subkey(key, _ENCRYPTION_LABEL))

    def __repr__(self) -> str:
        return f"PiiCipher(current={self.current_key_id}, keys={sorted(self._keys)})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def subkey(self, label: str, *, key_id: str | None = None) -> bytes:
        """A derived key for `label` from the current key, or from the named one.

        Store the key id next to whatever the subkey protects (for entry ids: with the
        poll's seed) and pass it back later, so a rotation does not change entry ids.
        """
        return derive_subkey(self._key(key_id or self.current_key_id), label)

    def encrypt(self, plaintext: str, *, aad: bytes) -> bytes:
        header = _VERSION + bytes.fromhex(self.current_key_id)
        nonce = os.urandom(NONCE_BYTES)
        body = self._aeads[self.current_key_id].encrypt(
            nonce, plaintext.encode("utf-8"), header + aad
        )
        return header + nonce + body

    def decrypt(self, token: bytes, *, aad: bytes) -> str:
        kid = self.key_id_of(token)
        aead = self._aeads.get(kid)
        if aead is None:
            raise PiiDecryptError(f"token was sealed with key {kid}, which is not in the keyring")
        header, nonce = token[:_HEADER_BYTES], token[_HEADER_BYTES:_BODY_STARTS]
        try:
            return aead.decrypt(nonce, token[_BODY_STARTS:], header + aad).decode("utf-8")
        except InvalidTag as exc:
            raise PiiDecryptError("token does not open: altered, or for another row") from exc

    def key_id_of(self, token: bytes) -> str:
        if len(token) < _BODY_STARTS + TAG_BYTES or token[:1] != _VERSION:
            raise PiiDecryptError("not a PII token of a known version")
        return token[1:_HEADER_BYTES].hex()

    def needs_rotation(self, token: bytes) -> bool:
        """True when the token should be re-encrypted under the current key."""
        return self.key_id_of(token) != self.current_key_id

    def _key(self, kid: str) -> bytes:
        try:
            return self._keys[kid]
        except KeyError:
            raise PiiKeyInvalid(f"key {kid} is not in the keyring") from None


def parse_keyring(current: str, previous: str = "") -> PiiCipher:
    """The cipher for PII_KEY and PII_PREVIOUS_KEYS (comma- or space-separated).

    Messages name the variable and never echo its value: it is a secret.
    """
    current_key = _decode_key(current, "PII_KEY")
    items = [item for item in _KEY_SEPARATORS.split(previous.strip()) if item]
    retired = [
        _decode_key(item, f"PII_PREVIOUS_KEYS (item {n})") for n, item in enumerate(items, 1)
    ]
    return PiiCipher(current_key, retired)


def _decode_key(text: str, name: str) -> bytes:
    value = text.strip()
    if not value:
        raise PiiKeyInvalid(f"{name} is empty: set it to base64 of {KEY_BYTES} random bytes")
    # Both alphabets and missing padding, so `openssl rand -base64 32` and
    # `secrets.token_urlsafe(32)` both work.
    standard = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        key = base64.b64decode(standard, validate=True)
    except binascii.Error:
        raise PiiKeyInvalid(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise PiiKeyInvalid(f"{name} must be base64 of {KEY_BYTES} bytes, not {len(key)} bytes")
    return key


def _framed(part: bytes) -> bytes:
    return struct.pack(">I", len(part)) + part
