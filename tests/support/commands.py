"""Running the project's modules as a person would: `python -m ...` from the checkout."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_module(
    module: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The finished run of `python -m module args...`, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def isolated_service_env(**settings: str) -> dict[str, str]:
    """What a service needs to start, with fresh secrets, plus ``settings``; its Kafka and
    Postgres point where nothing listens, so one that got past its start-up checks fails
    elsewhere instead of reaching a real stack."""
    secret = base64.b64encode(os.urandom(32)).decode()
    return {
        "PATH": os.environ.get("PATH", ""),
        "CAPTCHA_SECRET": secret,
        "VOTER_TOKEN_SECRET": secret,
        "PII_KEY": secret,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "DATABASE_URL": "postgresql://127.0.0.1:9/none",
        **settings,
    }
