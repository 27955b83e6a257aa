"""Voter tokens from an external sign-in (RS256) and staff tokens, as the API sees them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import HMACAlgorithm
from jwt.utils import base64url_encode

from shared.auth import AUDIENCE, ISSUER, StaffTokens, VoterTokens, _HS256CheckedOnce
from shared.errors import Forbidden, Unauthorized
from tests.support.commands import isolated_service_env, run_module

SECRET = "h" * 40


def rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


def external_token(private: bytes, subject: str = "wx-openid-123") -> str:
    claims = {
        "sub": subject,
        "exp": datetime.now(UTC) + timedelta(hours=1),
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    return jwt.encode(claims, private, algorithm="RS256")


def test_a_token_from_an_external_sign_in_is_accepted_with_its_public_key() -> None:
    private, public = rsa_pair()
    tokens = VoterTokens(SECRET, public)
    assert tokens.verify(external_token(private)) == "wx-openid-123"


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"aud": None}, "the voter token has no 'aud' claim"),
        ({"iss": None}, "the voter token has no 'iss' claim"),
        ({"aud": "another-app"}, "the voter token's 'aud' must be 'votes-voter'"),
        ({"iss": "wechat"}, "the voter token's 'iss' must be 'votes'"),
    ],
)
def test_an_external_token_with_wrong_claims_is_told_which(
    change: dict[str, str | None], detail: str
) -> None:
    """A sign-in being plugged in learns what its tokens lack from the 401 itself."""
    claims = {"sub": "sms-1", "exp": datetime.now(UTC) + timedelta(hours=1)}
    claims |= {"iss": ISSUER, "aud": AUDIENCE}
    for name, value in change.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    with pytest.raises(Unauthorized) as refused:
        VoterTokens(SECRET).verify(jwt.encode(claims, SECRET, algorithm="HS256"))
    assert refused.value.instance_code == "invalid_token"
    assert refused.value.detail == detail


def test_rs256_is_refused_when_no_public_key_is_configured() -> None:
    private, _ = rsa_pair()
    with pytest.raises(Unauthorized) as refused:
        VoterTokens(SECRET).verify(external_token(private))
    assert refused.value.instance_code == "invalid_token"


def test_a_token_signed_by_another_key_is_refused() -> None:
    _, public = rsa_pair()
    other_private, _ = rsa_pair()
    with pytest.raises(Unauthorized):
        VoterTokens(SECRET, public).verify(external_token(other_private))


def test_a_tampered_copy_of_a_verified_token_is_refused() -> None:
    tokens = VoterTokens(SECRET)
    issued = tokens.issue(datetime.now(UTC))
    assert tokens.verify(issued.token) == issued.voter_id  # now remembered
    head, payload, signature = issued.token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(Unauthorized):
        tokens.verify(f"{head}.{payload}.{flipped}")


def test_an_hs256_key_is_checked_once_and_a_refused_one_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str | bytes] = []
    library_check = HMACAlgorithm.prepare_key

    def counting(self: HMACAlgorithm, key: str | bytes) -> bytes:
        checked.append(key)
        return library_check(self, key)

    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counting)
    algorithm = _HS256CheckedOnce()
    assert algorithm.prepare_key(SECRET) == algorithm.prepare_key(SECRET) == SECRET.encode()
    assert checked == [SECRET]
    _, public = rsa_pair()
    for _ in range(2):
        with pytest.raises(jwt.InvalidKeyError):
            algorithm.prepare_key(public)
    assert checked == [SECRET, public, public]


def test_hs256_keys_past_the_kept_few_are_checked_every_time() -> None:
    algorithm = _HS256CheckedOnce()
    keys = [f"{n:02d}".ljust(40, "k") for n in range(algorithm.KEPT + 3)]
    for key in keys:
        assert algorithm.prepare_key(key) == key.encode()
    assert len(algorithm._checked) == algorithm.KEPT
    assert algorithm.prepare_key(keys[-1]) == keys[-1].encode()


def test_the_voter_tokens_verify_with_the_key_checked_once() -> None:
    assert isinstance(jwt.get_algorithm_by_name("HS256"), _HS256CheckedOnce)
    tokens = VoterTokens(SECRET, cache_size=0)
    issued = [tokens.issue(datetime.now(UTC)) for _ in range(3)]
    assert [tokens.verify(i.token) for i in issued] == [i.voter_id for i in issued]
    with pytest.raises(Unauthorized):
        VoterTokens("o" * 40).verify(issued[0].token)


def test_an_hs256_token_keyed_with_the_public_key_is_refused() -> None:
    """The algorithm-confusion forgery: the public key, which anyone may have, used as
    the HMAC secret of an HS256 token."""
    _, public = rsa_pair()
    claims = {"sub": "forged", "exp": int(time.time()) + 3600, "iss": ISSUER, "aud": AUDIENCE}
    head = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = base64url_encode(json.dumps(claims).encode())
    signature = hmac.new(public.encode(), head + b"." + body, hashlib.sha256).digest()
    forged = b".".join((head, body, base64url_encode(signature))).decode()
    tokens = VoterTokens(SECRET, public)
    with pytest.raises(Unauthorized):
        tokens.verify(forged)


def test_a_public_key_that_is_no_rsa_public_key_is_refused_at_start() -> None:
    private, _ = rsa_pair()
    with pytest.raises(ValueError, match=r"^VOTER_TOKEN_PUBLIC_KEY must be an RSA public key"):
        VoterTokens(SECRET, "not a key")
    with pytest.raises(ValueError, match="not a private key: give its public key"):
        VoterTokens(SECRET, private.decode())


@pytest.mark.parametrize("service", ["vote_ingest", "lottery"])
def test_a_service_given_no_rsa_public_key_stops_at_start_and_says_why(service: str) -> None:
    bad_key = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----"
    env = isolated_service_env(VOTER_TOKEN_PUBLIC_KEY=bad_key)
    run = run_module(f"services.{service}.main", env=env)
    assert run.returncode == 2, run.stderr
    assert "cannot start: VOTER_TOKEN_PUBLIC_KEY must be an RSA public key" in run.stderr


def test_staff_tokens_are_matched_by_their_hash() -> None:
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    staff = StaffTokens(f"alice={digest}")
    assert staff.require("Bearer s3cret-token") == "alice"
    with pytest.raises(Unauthorized):
        staff.require(None)
    with pytest.raises(Forbidden):
        staff.require("Bearer wrong")
    with pytest.raises(ValueError, match="STAFF_TOKENS"):
        StaffTokens("alice=not-a-hash")
