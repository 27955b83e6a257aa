"""What every part of a `Stack` shares: its state and its addresses."""

from __future__ import annotations

import threading
from pathlib import Path

from .console import Console
from .processes import Component
from .settings import Ports, StackError


class StackBase:
    """The state the parts read (`Stack.__init__` sets it) and the addresses they derive."""

    run_dir: Path
    ports: Ports
    overrides: dict[str, str]
    log_dir: Path
    console: Console
    gateway_host: str
    components: dict[str, Component]
    _lock: threading.RLock

    @property
    def kafka_bootstrap(self) -> str:
        return self.overrides.get("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{self.ports.kafka}")

    @property
    def database_url(self) -> str:
        default = f"postgresql://127.0.0.1:{self.ports.postgres}/votes"
        return self.overrides.get("DATABASE_URL", default)

    @property
    def gateway_url(self) -> str:
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::") else self.gateway_host  # noqa: S104
        return f"http://{host}:{self.ports.gateway}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, name)}"

    @property
    def polls_file(self) -> Path:
        return Path(self.overrides.get("POLLS_FILE", self.run_dir / "polls.yaml"))

    @property
    def staff_token_file(self) -> Path:
        return self.run_dir / "staff.token"

    def _kafka_host(self) -> str | None:
        first = self.kafka_bootstrap.split(",")[0]
        return first.rpartition(":")[0].strip("[]") or None

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(self.components)
            raise StackError(f"no component {name!r} (known: {known})") from None
