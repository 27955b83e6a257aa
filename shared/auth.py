"""Who is calling: voters by JWT (contract section 5) and staff by bearer token.

Voter tokens are HS256 JWTs signed with VOTER_TOKEN_SECRET whose `sub` is the voter id,
with `exp`, `iss` = "votes" and `aud` = "votes-voter" (the audience keeps another JWT
signed with the same key from passing for a voter token); when an RS256 public key is
configured, tokens minted by an external sign-in (WeChat, SMS) with the matching
private key are accepted too, with no code change.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm

from shared.errors import Forbidden, Unauthorized

ISSUER = "votes"
AUDIENCE = "votes-voter"
_LEEWAY = timedelta(seconds=30)


class _HS256CheckedOnce(HMACAlgorithm):
    """HS256 that checks each key once rather than on every token.

    PyJWT makes sure an HMAC key is no PEM, SSH or DER key nor a JSON web key each time
    it is used: a quarter of verifying a token, paid by every vote. The checks depend on
    the key alone, so a key that passed them once is kept (the few configured secrets;
    past that, keys are checked every time as before).
    """

    KEPT = 16

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._checked: dict[str | bytes, bytes] = {}

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._checked.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._checked) < self.KEPT:
                self._checked[key] = prepared
        return prepared


jwt.unregister_algorithm("HS256")
jwt.register_algorithm("HS256", _HS256CheckedOnce())


@dataclass(frozen=True)
class IssuedToken:
    token: str
    voter_id: str
    expires_at: datetime


class VoterTokens:
    def __init__(
        self, secret: str, public_key: str | None = None, *, cache_size: int = 10_000
    ) -> None:
        if len(secret) < 32:
            raise ValueError("VOTER_TOKEN_SECRET must be at least 32 characters")
        self._secret = secret
        # Parsed once: PyJWT would otherwise load the PEM again for every RS256 token.
        self._public_key = _rsa_public_key(public_key) if public_key else None
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def issue(self, now: datetime, ttl: timedelta = timedelta(days=30)) -> IssuedToken:
        voter_id = f"v-{uuid.uuid4().hex}"
        expires = now + ttl
        claims = {"sub": voter_id, "iat": now, "exp": expires, "iss": ISSUER, "aud": AUDIENCE}
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return IssuedToken(token, voter_id, expires)

    def verify(self, token: str) -> str:
        """The voter id of a valid token; Unauthorized otherwise."""
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known[1]:
            self._verified.move_to_end(token)
            return known[0]
        claims = self._decode(token)
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= 128:
            raise Unauthorized("the voter token has no usable subject", code="invalid_token")
        self._remember(token, subject, claims["exp"], now)
        return subject

    def _decode(self, token: str) -> dict[str, Any]:
        # HS256 first, without reading the header on its own: a token of another
        # algorithm is refused by the allow-list before any key is used, then tried as
        # RS256 when a public key is configured (the key always picks the algorithm).
        try:
            try:
                return self._decode_with(token, self._secret, "HS256")
            except jwt.InvalidAlgorithmError:
                if not self._public_key:
                    raise
                return self._decode_with(token, self._public_key, "RS256")
        except jwt.InvalidAlgorithmError as exc:
            raise Unauthorized(
                "the voter token's algorithm is not accepted", code="invalid_token"
            ) from exc
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the voter token has expired", code="token_expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"the voter token has no {exc.claim!r} claim", code="invalid_token"
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized(
                f"the voter token's 'aud' must be {AUDIENCE!r}", code="invalid_token"
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthorized(
                f"the voter token's 'iss' must be {ISSUER!r}", code="invalid_token"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("the voter token is not valid", code="invalid_token") from exc

    @staticmethod
    def _decode_with(token: str, key: str | RSAPublicKey, algorithm: str) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=_LEEWAY,
            options={"require": ["sub", "exp", "iss", "aud"]},
        )
        return claims

    def _remember(self, token: str, subject: str, exp: Any, now: float) -> None:
        """Keep a verified token until its expiry: a retried or repeated request with
        the same token skips the signature check. Bounded, least recently used first out."""
        if not isinstance(exp, int | float) or exp <= now:
            return
        self._verified[token] = (subject, float(exp))
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)


def _rsa_public_key(pem: str) -> RSAPublicKey:
    wanted = "VOTER_TOKEN_PUBLIC_KEY must be an RSA public key in PEM"
    try:
        key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError) as exc:
        raise ValueError(wanted) from exc
    if not isinstance(key, RSAPublicKey):
        # The sign-in that mints tokens keeps the private key; the services need only
        # the public one and should never hold the other.
        raise ValueError(f"{wanted}, not a private key: give its public key (openssl rsa -pubout)")
    return key


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def voter_from_header(tokens: VoterTokens, authorization: str | None) -> str:
    token = bearer(authorization)
    if token is None:
        raise Unauthorized("send the voter token as 'Authorization: Bearer <token>'")
    return tokens.verify(token)


class StaffTokens:
    """STAFF_TOKENS = name=sha256hex,...: only hashes of the tokens are configured."""

    def __init__(self, spec: str) -> None:
        self._by_hash: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, digest = item.partition("=")
            digest = digest.strip().lower()
            if not sep or not name.strip() or len(digest) != 64:
                raise ValueError("STAFF_TOKENS must look like name=<sha256 hex>,...")
            int(digest, 16)
            self._by_hash[digest] = name.strip()

    def identify(self, authorization: str | None) -> str | None:
        """The staff member's name, or None when the header carries no valid staff token."""
        token = bearer(authorization)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, name in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                return name
        return None

    def require(self, authorization: str | None) -> str:
        if bearer(authorization) is None:
            raise Unauthorized("this call needs a staff token")
        name = self.identify(authorization)
        if name is None:
            raise Forbidden("the staff token is not valid", code="forbidden")
        return name


def utcnow() -> datetime:
    return datetime.now(UTC)
