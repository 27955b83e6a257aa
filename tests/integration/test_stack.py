"""The local stack runner itself: readiness, gateway routing, crash recovery, pauses.

Which service answered a request is read from the gateway's access log (upstream
address by request id), so these checks do not depend on what the services answer.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import random_vote_id
from tests.stackctl import StackControl

pytestmark = pytest.mark.integration

# Generous: a 2-core CI machine restarts a service in a few seconds, but not always.
READY_TIMEOUT = 45.0


def wait_for(check: str, condition: Callable[[], object], timeout: float = READY_TIMEOUT) -> None:
    """Poll `condition()` until it is truthy; fail naming `check` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"{check}: not true within {timeout:.0f} s")


def status_of(url: str, timeout: float = 2.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def is_ok(url: str) -> bool:
    return status_of(url) == 200


def access_log_entry(run_dir: Path, request_id: str, timeout: float = 20.0) -> dict[str, object]:
    log = run_dir / "logs" / "gateway.access.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            entry: dict[str, object] = json.loads(line)
            if entry["request_id"] == request_id:
                return entry
        time.sleep(0.2)
    pytest.fail(f"request {request_id} is not in {log} after {timeout:.0f} s")


def test_every_service_is_ready_directly(service_urls: dict[str, str]) -> None:
    for name, url in service_urls.items():
        ready = functools.partial(is_ok, f"{url}/readyz")
        wait_for(f"{name} /readyz is 200", ready)
        assert status_of(f"{url}/healthz") == 200, name
        assert status_of(f"{url}/metrics") == 200, name


ROUTES = [
    ("/", "vote_ingest"),
    ("/api/v1/polls", "vote_ingest"),
    ("/api/v1/polls/demo-reform", "vote_ingest"),
    ("/api/v1/captcha/no-such-captcha/audio", "vote_ingest"),
    (f"/api/v1/votes/{random_vote_id()}", "antifraud"),
    ("/api/v1/polls/demo-reform/results", "tally"),
    ("/api/v1/polls/no-such-poll/results/stream", "tally"),
    ("/api/v1/polls/demo-reform/lottery", "lottery"),
    ("/api/v1/polls/demo-reform/lottery/audit", "lottery"),
    ("/staff/", "lottery"),
]


@pytest.mark.parametrize(("path", "service"), ROUTES)
def test_gateway_routes_each_prefix_to_its_service(
    client: httpx.Client,
    service_urls: dict[str, str],
    stack_run_dir: Path,
    path: str,
    service: str,
) -> None:
    request_id = f"route-{uuid.uuid4().hex}"
    # Streams are closed as soon as the answer starts: only the routing matters here.
    with client.stream("GET", path, headers={"X-Request-Id": request_id}) as response:
        assert response.headers["X-Request-Id"] == request_id
        assert response.status_code != 503, f"{service} unavailable behind the gateway"
    entry = access_log_entry(stack_run_dir, request_id)
    expected = service_urls[service].removeprefix("http://")
    assert entry["upstream"] == expected, f"{path} went to {entry['upstream']}"


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/metrics/", "/readyz/x"])
def test_gateway_hides_probes_and_metrics(
    client: httpx.Client, stack_run_dir: Path, path: str
) -> None:
    request_id = f"hidden-{uuid.uuid4().hex}"
    response = client.get(path, headers={"X-Request-Id": request_id})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"
    assert access_log_entry(stack_run_dir, request_id)["upstream"] == ""


def test_gateway_refuses_large_bodies_as_problem_json(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/polls/demo-reform/votes",
        content=b"x" * 20_000,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_gateway_replaces_forwarded_for(client: httpx.Client, stack_run_dir: Path) -> None:
    request_id = f"xff-{uuid.uuid4().hex}"
    headers = {"X-Request-Id": request_id, "X-Forwarded-For": "203.0.113.9"}
    client.get("/api/v1/polls", headers=headers)
    conf = (stack_run_dir / "nginx" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert access_log_entry(stack_run_dir, request_id)["remote_addr"] == "127.0.0.1"


@pytest.mark.slow
def test_killed_service_is_restarted_by_the_supervisor(
    stack: StackControl, service_urls: dict[str, str]
) -> None:
    stack.wait_ready("tally", READY_TIMEOUT)
    old_pid = stack.pid("tally")
    assert old_pid is not None
    restarts = stack.status()["tally"]["restarts"]

    stack.kill("tally")  # SIGKILL, as the kernel's OOM killer would

    new_pid = stack.wait_restarted("tally", old_pid, timeout=READY_TIMEOUT)
    assert new_pid != old_pid
    assert stack.status()["tally"]["restarts"] == restarts + 1
    assert status_of(f"{service_urls['tally']}/readyz") == 200


@pytest.mark.slow
def test_paused_service_hangs_and_resumes(
    stack: StackControl, service_urls: dict[str, str]
) -> None:
    url = f"{service_urls['lottery']}/healthz"
    stack.wait_ready("lottery", READY_TIMEOUT)
    pid = stack.pid("lottery")
    stack.pause("lottery")
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.get(url, timeout=1.5)
        assert stack.status()["lottery"]["paused"] is True
    finally:
        stack.resume("lottery")
    wait_for("lottery answers again after SIGCONT", lambda: status_of(url) == 200)
    assert stack.pid("lottery") == pid, "a paused service must not be restarted"


@pytest.mark.slow
def test_stopped_service_is_a_retryable_503_at_the_gateway(
    stack: StackControl, client: httpx.Client
) -> None:
    stack.wait_ready("lottery", READY_TIMEOUT)
    stack.stop("lottery")
    try:
        response = client.get("/api/v1/polls/demo-reform/lottery")
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json()["code"] == "service_unavailable"
        assert stack.pid("lottery") is None
        # A browser opening a page gets a page, in the voter's words, that reloads itself.
        page = client.get("/staff/", headers={"Accept": "text/html,*/*;q=0.8"})
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "服务正在重启" in page.text and 'http-equiv="refresh"' in page.text
    finally:
        stack.start("lottery")
    wait_for(
        "lottery is back behind the gateway",
        lambda: client.get("/api/v1/polls/demo-reform/lottery").status_code != 503,
    )
