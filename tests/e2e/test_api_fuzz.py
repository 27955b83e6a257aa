"""The public API under generated and hostile input, through the gateway.

Schemathesis reads the API document the gateway serves (/openapi.json) and generates
valid and invalid requests for every operation in it, anonymously and with a real voter
token; then hand-written hostile requests that generators rarely produce: malformed JSON,
wrong types, deep nesting, a 10 MB body, unicode junk, huge headers and URLs.

What a client must see, whatever it sends: never a 5xx, and every error as RFC 9457
problem+json with a stable `code`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.checks import not_a_server_error

from services.vote_ingest.openapi import openapi_document
from tests.support.http import (
    PROBLEM_JSON,
    Voter,
    assert_problem,
    assert_problem_shape,
    gateway_client,
    new_voter,
    open_poll,
)

pytestmark = pytest.mark.e2e

# Per operation, mode and identity: about a minute for the whole module on 2 cores.
MAX_EXAMPLES = 100
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TEN_MB = 10 * 1024 * 1024

# Hypothesis tests are built from each operation's strategy rather than with
# schemathesis.pytest.from_fixture, whose lazy loading fails under pytest 9.2 (it sets
# the removed Node._nodeid); the stack's address is only known when a test runs.
# One test per operation of the API document, generation mode and identity. The served
# document is loaded when the test runs; the list of operations comes from the module
# that serves it, so a call missing from the served document fails instead of vanishing.
# Invalid (negative) data needs something to break: only calls that take a body get it.
_DOCUMENT_PATHS: dict[str, dict[str, Any]] = openapi_document()["paths"]
# anonymous: whatever the generator puts in Authorization, if anything; voter: a real
# voter token on every request, so bodies reach the checks behind it; open poll: a real
# token and the open poll's id, so votes and entries reach the poll's own rules.
GENERATED = [
    (method.upper(), path, mode, variant)
    for path, methods in _DOCUMENT_PATHS.items()
    for method, spec in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for variant in ("anonymous", "voter", "open poll")
    if (mode is GenerationMode.POSITIVE or "requestBody" in spec)
    and (variant != "open poll" or "{poll}" in path)
]


@pytest.fixture(scope="module")
def api_schema(gateway_url: str) -> BaseSchema:
    loaded: BaseSchema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    return loaded


@pytest.fixture(scope="module")
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with gateway_client(gateway_url, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="module")
def voter(client: httpx.Client) -> Voter:
    return new_voter(client)


@pytest.fixture(scope="module")
def poll_id(client: httpx.Client) -> str:
    poll_id: str = open_poll(client)["id"]
    return poll_id


def errors_are_problem_json(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx and 5xx answer is problem+json with a non-empty string `code`."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM_JSON), (
        f"{response.status_code} answered as {content_type!r}: {response.text[:200]}"
    )
    body = response.json()
    assert isinstance(body, dict), f"problem body is not an object: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"problem without code: {body}"
    return None


CHECKS: list[CheckFunction] = [not_a_server_error, errors_are_problem_json]


@pytest.mark.parametrize(
    ("method", "path", "mode", "variant"),
    GENERATED,
    ids=[f"{m} {p} {g.value} {v}" for m, p, g, v in GENERATED],
)
def test_generated_requests_never_get_a_5xx(
    api_schema: BaseSchema,
    voter: Voter,
    poll_id: str,
    method: str,
    path: str,
    mode: GenerationMode,
    variant: str,
) -> None:
    operation = api_schema[path][method]
    headers = None if variant == "anonymous" else voter.auth
    fixed = {"poll": poll_id} if variant == "open poll" else None
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        case.call_and_validate(checks=CHECKS, headers=headers)

    run()


# ------------------------------------------------------------------ hostile bodies

BODY_CALLS = ["votes", "lottery/entry", "lottery/draw"]

MALFORMED_JSON: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated", b'{"choice": '),
    ("single quotes", b"{'choice': 'good'}"),
    ("bare word", b"nul"),
    ("trailing comma", b'{"choice": "good",}'),
    ("two documents", b'{"choice": "good"} {"choice": "good"}'),
    ("NaN", b'{"choice": NaN}'),
]
WRONG_TYPES: list[tuple[str, bytes]] = [
    ("numbers", b'{"choice": 1, "captcha_id": 2, "captcha_answer": 3, "name": 4, "phone": 5}'),
    ("nulls", b'{"choice": null, "captcha_id": null, "name": null, "phone": null}'),
    ("nested objects", b'{"choice": {"$gt": ""}, "name": ["x"], "phone": {"a": 1}}'),
    ("array", b'[{"choice": "good"}]'),
    ("string", b'"good"'),
    ("null", b"null"),
    ("huge number", b'{"choice": ' + b"9" * 3000 + b"}"),
    ("unknown field", b'{"choice": "good", "is_admin": true, "external_entropy": 1}'),
]
UNICODE_JUNK: list[tuple[str, bytes]] = [
    ("invalid utf-8", b'{"choice": "\xff\xfe\xc3\x28"}'),
    ("lone surrogates", b'{"choice": "\\ud800", "name": "\\udfff", "phone": "\\ud83d"}'),
    ("nul and controls", b'{"choice": "\\u0000\\u0007\\u001b[31m", "name": "\\u0000"}'),
    ("bidi and zero width", '{"choice": "\u202egood\u200b", "name": "\u202e\ufeff"}'.encode()),
    ("astral keys", '{"\U0001f4a9": "\U0001f4a9", "name": "\U0001f600" }'.encode()),
    ("utf-16 body", '{"choice": "good"}'.encode("utf-16")),
]
# Python's json module recurses once per level; an attacker needs only a few KB.
DEEP_NESTING: list[tuple[str, bytes]] = [
    ("deep arrays", b"[" * 2000 + b"]" * 2000),
    ("deep objects", b'{"a":' * 800 + b"1" + b"}" * 800),
]

HOSTILE = MALFORMED_JSON + WRONG_TYPES + UNICODE_JUNK + DEEP_NESTING


def _auth_for(call: str, voter: Voter, staff_token: str) -> dict[str, str]:
    # The draw is a staff call: with the staff token the body is what gets judged. The
    # poll is open, so even a valid body is refused (409 poll_open) and nothing is drawn.
    if call == "lottery/draw":
        return {"Authorization": f"Bearer {staff_token}"}
    return voter.auth


@pytest.mark.parametrize("call", BODY_CALLS)
@pytest.mark.parametrize(("kind", "body"), HOSTILE, ids=[kind for kind, _ in HOSTILE])
def test_hostile_bodies_get_a_4xx_problem(
    client: httpx.Client,
    voter: Voter,
    staff_token: str,
    poll_id: str,
    call: str,
    kind: str,
    body: bytes,
) -> None:
    headers = {"Content-Type": "application/json", **_auth_for(call, voter, staff_token)}
    response = client.post(f"/api/v1/polls/{poll_id}/{call}", content=body, headers=headers)
    assert 400 <= response.status_code < 500, (
        f"{kind} to {call}: {response.status_code} {response.text[:200]}"
    )
    assert_problem_shape(response)


def _ten_megabytes() -> Iterator[bytes]:
    chunk = b"x" * 65536
    for _ in range(TEN_MB // len(chunk)):
        yield chunk


@pytest.mark.parametrize("call", BODY_CALLS)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_10_mb_body_gets_413_problem(
    client: httpx.Client,
    voter: Voter,
    staff_token: str,
    poll_id: str,
    call: str,
    framing: str,
) -> None:
    headers = {"Content-Type": "application/json", **_auth_for(call, voter, staff_token)}
    content: bytes | Iterator[bytes] = (
        b"x" * TEN_MB if framing == "content-length" else _ten_megabytes()
    )
    response = client.post(f"/api/v1/polls/{poll_id}/{call}", content=content, headers=headers)
    assert_problem(response, 413, "payload_too_large")


def test_a_body_just_over_4_kib_gets_413_from_the_service(
    client: httpx.Client, voter: Voter, poll_id: str
) -> None:
    body = b'{"choice": "' + b"a" * 4100 + b'"}'
    headers = {"Content-Type": "application/json", **voter.auth}
    response = client.post(f"/api/v1/polls/{poll_id}/votes", content=body, headers=headers)
    assert_problem(response, 413, "payload_too_large")


# ------------------------------------------------------------------ hostile heads


HOSTILE_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("64 KB header", {"path": "/api/v1/polls", "headers": {"X-Junk": "a" * 65536}}),
    ("12 KB cookie", {"path": "/api/v1/polls", "headers": {"Cookie": "s=" + "a" * 12288}}),
    (
        "6 KB bearer token",
        {
            "path": "/api/v1/polls/{poll}/lottery/entry",
            "headers": {"Authorization": "Bearer " + "a" * 6144},
        },
    ),
    (
        "200 headers",
        {"path": "/api/v1/polls", "headers": {f"X-J{i}": "a" * 64 for i in range(200)}},
    ),
    ("10 KB path", {"path": "/api/v1/polls/" + "a" * 10240}),
    ("unicode path", {"path": "/api/v1/polls/%F0%9F%92%A9%E2%80%AE/results"}),
    ("NUL in path", {"path": "/api/v1/polls/a%00b"}),
    ("dot segments", {"path": "/api/v1/polls/%2e%2e/%2e%2e/metrics"}),
    ("bad percent", {"path": "/api/v1/votes/%zz%ff"}),
    ("odd method", {"path": "/api/v1/session", "method": "PATCH"}),
    ("odd accept", {"path": "/api/v1/polls/nope", "headers": {"Accept": "text/html;q=1"}}),
]


@pytest.mark.parametrize(
    "request_spec", [spec for _, spec in HOSTILE_REQUESTS], ids=[n for n, _ in HOSTILE_REQUESTS]
)
def test_hostile_requests_get_a_problem_not_a_server_page(
    client: httpx.Client, poll_id: str, request_spec: dict[str, Any]
) -> None:
    path = str(request_spec["path"]).replace("{poll}", poll_id)
    response = client.request(
        request_spec.get("method", "GET"), path, headers=request_spec.get("headers", {})
    )
    assert response.status_code < 500, f"{response.status_code} {response.text[:200]}"
    if response.status_code >= 400:
        assert_problem_shape(response)
