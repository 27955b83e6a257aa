"""The four services: their command, readiness, environment, secrets and poll catalog."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

from .base import StackBase
from .processes import http_status
from .settings import DEMO_POLL, REPO, SERVICES, STACK_OWNED, StackError
from .tools import _which


@dataclass
class _Secrets:
    values: dict[str, str] = field(default_factory=dict)
    staff_token: str | None = None


class ServicesMixin(StackBase):
    """What the services run with, and what tests and tools driving them are told."""

    _secrets: _Secrets

    def service_env(self) -> dict[str, str]:
        """What every service process gets: defaults, then whatever the user set."""
        defaults = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "POLLS_FILE": str(self.polls_file),
            "TRUSTED_PROXIES": "127.0.0.1/32",
            "HTTP_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
            **{f"{name.upper()}_PORT": str(getattr(self.ports, name)) for name in SERVICES},
            **self._secrets.values,
        }
        inherited = {k: v for k, v in os.environ.items() if k not in STACK_OWNED}
        return {**inherited, **defaults, **self.overrides}

    def client_env(self) -> dict[str, str]:
        """What tests and tools driving the stack get: its addresses, secrets and catalog.

        Not the services' own settings (ports, HTTP_HOST): a test that builds a service's
        settings must see that service's defaults.
        """
        env = {k: v for k, v in os.environ.items() if k not in STACK_OWNED}
        env.update(self._secrets.values)
        env.update({k: v for k, v in self.overrides.items() if k in STACK_OWNED})
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.kafka_bootstrap,
            DATABASE_URL=self.database_url,
            POLLS_FILE=str(self.polls_file),
            GATEWAY_URL=self.gateway_url,
            PROMETHEUS_URL=self.prometheus_url,
            STACK_RUN_DIR=str(self.run_dir),
            PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1",
            **{f"{name.upper()}_URL": self.service_url(name) for name in SERVICES},
        )
        if self._secrets.staff_token is not None:
            env["STAFF_TOKEN"] = self._secrets.staff_token
        chromium = _which("chromium")
        if chromium:
            env.setdefault("CHROMIUM_PATH", chromium)
        return env

    def _load_secrets(self) -> _Secrets:
        path = self.run_dir / "secrets.env"
        if not path.exists():
            lines = [
                "# Generated on first start of the local stack; `make clean` deletes it.",
                f"CAPTCHA_SECRET={secrets.token_urlsafe(32)}",
                f"VOTER_TOKEN_SECRET={secrets.token_urlsafe(32)}",
                f"PII_KEY={base64.b64encode(secrets.token_bytes(32)).decode()}",
            ]
            _write_private(path, "\n".join(lines) + "\n")
        values = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        if not self.staff_token_file.exists():
            _write_private(self.staff_token_file, secrets.token_urlsafe(32) + "\n")
        token = self.staff_token_file.read_text().strip()
        values["STAFF_TOKENS"] = f"staff={hashlib.sha256(token.encode()).hexdigest()}"
        return _Secrets(values, None if "STAFF_TOKENS" in self.overrides else token)

    def _validate_catalog(self) -> None:
        from shared.catalog import load_catalog

        try:
            load_catalog(self.polls_file)
        except Exception as exc:
            raise StackError(f"poll catalog {self.polls_file}: {exc}") from None

    @staticmethod
    def _service_command(name: str) -> list[str]:
        if not (REPO / "services" / name / "main.py").exists():
            raise StackError(f"services/{name}/main.py is missing")
        return [sys.executable, "-m", f"services.{name}.main"]

    def _service_ready(self, name: str) -> bool:
        return http_status(f"{self.service_url(name)}/readyz") == 200


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def write_demo_catalog(path: Path) -> None:
    """The historical campaign (closed) plus a demo poll open from today for two weeks."""
    import yaml

    historical = yaml.safe_load((REPO / "shared" / "demo_polls.yaml").read_text())["polls"]
    zone = ZoneInfo("Asia/Shanghai")
    today = datetime.now(zone).date()
    demo = {
        "id": DEMO_POLL,
        "title": "城市更新项目评议 (演示)",
        "summary": (
            "演示投票：请您对本区城市更新项目的成效作出评价。每人每天可投一票，"
            "参与投票的天数越多，抽奖中签机会越大。"
        ),
        "options": ["excellent", "good", "fair", "poor"],
        "opens_at": datetime.combine(today, clock(0), zone),
        "closes_at": datetime.combine(today + timedelta(days=14), clock(9), zone),
        "timezone": "Asia/Shanghai",
        "daily_limit": 1,
        "results": "live",
        "lottery": {"prizes": 30, "prize": "青年文化盲盒", "reserves": 10},
        "translations": {
            "en": {
                "title": "Urban renewal project review (demo)",
                "summary": (
                    "Demo poll: please rate the district's urban renewal project. One vote "
                    "per person per day; every day you vote raises your chance in the "
                    "prize draw."
                ),
                "prize": "youth culture blind box",
            }
        },
    }
    header = (
        "# The local stack's poll catalog, written on first start (make clean deletes it).\n"
        "# Set POLLS_FILE to serve another catalog.\n"
    )
    body = yaml.safe_dump(
        {"polls": [*historical, demo]}, allow_unicode=True, sort_keys=False, width=100
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body)
