"""Fixtures shared by every test.

`make test` starts a fresh local stack (real Kafka, real PostgreSQL, the four services,
the gateway, Prometheus) and runs pytest with its addresses and secrets in the
environment; the fixtures below read them. Tests under tests/integration and tests/e2e
are marked accordingly, and fail (never skip) when that environment is missing, so a
suite run without the stack cannot pass by testing nothing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stackctl import StackControl
from tests.support.http import gateway_client

_TESTS = Path(__file__).parent
_STACK_MARKERS = {"integration": _TESTS / "integration", "e2e": _TESTS / "e2e"}
_HOW = "run the suite with `make test`, which starts the stack and sets the environment"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, folder in _STACK_MARKERS.items():
            if item.path.is_relative_to(folder):
                item.add_marker(marker)


def pytest_runtest_setup(item: pytest.Item) -> None:
    needs_stack = any(item.get_closest_marker(marker) for marker in _STACK_MARKERS)
    if needs_stack and not os.environ.get("STACK_RUN_DIR"):
        pytest.fail(f"this test needs the real Kafka and PostgreSQL: {_HOW}", pytrace=False)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: {_HOW}", pytrace=False)
    return value


# ---------------------------------------------------------------- addresses and secrets


@pytest.fixture(scope="session")
def gateway_url() -> str:
    """The one public origin, e.g. http://127.0.0.1:18080 (no trailing slash)."""
    return _env("GATEWAY_URL").rstrip("/")


@pytest.fixture
def client(gateway_url: str) -> Iterator[httpx.Client]:
    """An HTTP client on the gateway, as a browser or a script would call it."""
    with gateway_client(gateway_url) as http:
        yield http


@pytest.fixture(scope="session")
def service_urls() -> dict[str, str]:
    """Each service directly (for /readyz, /metrics), by service name."""
    names = ("vote_ingest", "antifraud", "tally", "lottery")
    return {name: _env(f"{name.upper()}_URL").rstrip("/") for name in names}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _env("KAFKA_BOOTSTRAP_SERVERS")


@pytest.fixture(scope="session")
def database_url() -> str:
    return _env("DATABASE_URL")


@pytest.fixture(scope="session")
def prometheus_url() -> str:
    return _env("PROMETHEUS_URL").rstrip("/")


@pytest.fixture(scope="session")
def captcha_secret() -> str:
    return _env("CAPTCHA_SECRET")


@pytest.fixture(scope="session")
def voter_token_secret() -> str:
    return _env("VOTER_TOKEN_SECRET")


@pytest.fixture(scope="session")
def staff_token() -> str:
    """The raw staff token; the services know only its sha256 (STAFF_TOKENS)."""
    return _env("STAFF_TOKEN")


@pytest.fixture(scope="session")
def polls_file() -> Path:
    return Path(_env("POLLS_FILE"))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium: Playwright launches it with executable_path (no download)."""
    return _env("CHROMIUM_PATH")


@pytest.fixture(scope="session")
def stack_run_dir() -> Path:
    """Where the stack keeps its data and logs (logs/<component>.log)."""
    return Path(_env("STACK_RUN_DIR"))


@pytest.fixture(scope="session")
def stack(stack_run_dir: Path) -> StackControl:
    """Crash, pause, stop and restart the stack's components (see tests/stackctl.py)."""
    return StackControl(stack_run_dir)


# ---------------------------------------------------------------- ids, never shared


def random_vote_id() -> str:
    return str(uuid.uuid4())


def random_voter_id() -> str:
    return f"v-{uuid.uuid4().hex}"


def unique_name(prefix: str) -> str:
    """A fresh name for a test's own topic, schema or consumer group.

    Lower case letters, digits and underscores only: valid as a Kafka topic, a consumer
    group and an unquoted PostgreSQL identifier.
    """
    stem = re.sub(r"[^a-z0-9_]", "_", prefix.lower()) or "t"
    return f"{stem}_{uuid.uuid4().hex[:12]}"
