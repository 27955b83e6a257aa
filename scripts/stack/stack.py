"""`Stack`: the parts put together, prepared, started in order and stopped in reverse."""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import signal
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .console import Console
from .gateway import GatewayMixin
from .kafka import KafkaMixin, _kafka_ready
from .postgres import PostgresMixin
from .processes import Component, _port_in_use, http_status
from .services import ServicesMixin, _Secrets, write_demo_catalog
from .settings import BACKGROUND_NICE, SERVICES, Ports, StackError, _is_local
from .supervisor import SupervisorMixin
from .tools import install_packages, kafka_libs, missing_packages, pg_bindir


class Stack(ServicesMixin, PostgresMixin, KafkaMixin, GatewayMixin, SupervisorMixin):
    """Every process of one local deployment, under `run_dir`."""

    def __init__(
        self,
        run_dir: Path,
        ports: Ports,
        env: Mapping[str, str],
        *,
        console: Console | None = None,
        browser: bool = False,
        port_hint: str = "set GATEWAY_PORT, KAFKA_BOOTSTRAP_SERVERS, ... (README: Settings)",
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.ports = ports
        self.overrides = dict(env)
        self.log_dir = self.run_dir / "logs"
        self.console = console or Console(self.log_dir, follow=False)
        self.browser = browser
        self.port_hint = port_hint
        self.gateway_host = self.overrides.get("GATEWAY_HOST", "127.0.0.1")
        self.kafka_local = _is_local(self._kafka_host())
        db = urllib.parse.urlsplit(self.database_url)
        self.postgres_local = _is_local(db.hostname)
        self.db_name = db.path.lstrip("/") or "votes"
        self.db_user = db.username or pwd.getpwuid(os.geteuid()).pw_name
        self.components = self._components()
        self._secrets = _Secrets()
        self._libs: Path | None = None
        self._pg_bin: Path | None = None
        self._lock = threading.RLock()
        self._spawner: ThreadPoolExecutor | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started = False

    # ---- prepare

    def prepare(self) -> None:
        """Install what is missing and write the files a first run needs."""
        install_packages(missing_packages(browser=self.browser), self.console.note)
        if self.kafka_local:
            self._libs = kafka_libs(self.console.note)
        if self.postgres_local:
            self._pg_bin = pg_bindir()
        for sub in ("logs", "nginx/tmp", "prometheus"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self._secrets = self._load_secrets()
        if "POLLS_FILE" not in self.overrides and not self.polls_file.exists():
            write_demo_catalog(self.polls_file)
        self._validate_catalog()

    # ---- components

    def _components(self) -> dict[str, Component]:
        found: list[Component] = []
        if self.postgres_local:
            found.append(
                Component(
                    "postgres",
                    self.ports.postgres,
                    self._postgres_command,
                    self._postgres_ready,
                    ready_timeout=60,
                    stop_signal=signal.SIGINT,  # "fast" shutdown
                    stop_timeout=30,
                    user="postgres" if os.geteuid() == 0 else None,
                    nice=BACKGROUND_NICE,
                )
            )
        if self.kafka_local:
            found.append(
                Component(
                    "kafka",
                    self.ports.kafka,
                    self._kafka_command,
                    lambda: _kafka_ready(self.kafka_bootstrap),
                    ready_timeout=90,
                    stop_timeout=30,
                )
            )
        for name in SERVICES:
            found.append(
                Component(
                    name,
                    getattr(self.ports, name),
                    functools.partial(self._service_command, name),
                    functools.partial(self._service_ready, name),
                    ready_timeout=90,
                    env=self.service_env,
                    nice=0 if name == "vote_ingest" else BACKGROUND_NICE,
                )
            )
        found.append(
            Component(
                "gateway",
                self.ports.gateway,
                self._gateway_command,
                # nginx answers /healthz itself (404): any answer means it is serving.
                lambda: http_status(f"{self.gateway_url}/healthz") == 404,
                ready_timeout=20,
                stop_timeout=10,
            )
        )
        found.append(
            Component(
                "prometheus",
                self.ports.prometheus,
                self._prometheus_command,
                lambda: http_status(f"{self.prometheus_url}/-/ready") == 200,
                ready_timeout=60,
                stop_timeout=15,
            )
        )
        return {component.name: component for component in found}

    # ---- lifecycle

    def start(self) -> None:
        """Start every component in order, each awaited; on failure stop what started."""
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        atexit.register(self.stop)
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="spawner")
        try:
            self._check_ports()
            if "postgres" in self.components:
                self._init_postgres()
            if "kafka" in self.components:
                self._init_kafka()
            self._start_group(("postgres", "kafka"))
            if "postgres" in self.components:
                self._create_database()
            self._start_group(SERVICES)
            self._start_group(("gateway", "prometheus"))
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor")
        self._supervisor.daemon = True
        self._supervisor.start()

    def _check_ports(self) -> None:
        for component in self.components.values():
            host = self.gateway_host if component.name == "gateway" else "127.0.0.1"
            ports = [component.port]
            if component.name == "kafka":
                ports.append(self.ports.kafka_controller)
            for port in ports:
                if _port_in_use(host, port):
                    raise StackError(
                        f"port {port} ({component.name}) is already in use: is another stack "
                        f"running? Stop it, or move this one: {self.port_hint}"
                    )

    def _start_group(self, names: Sequence[str]) -> None:
        # Kafka and Postgres are absent when the environment points at external ones.
        components = [self.components[name] for name in names if name in self.components]
        for component in components:
            self.console.note(f"starting {component.name}")
            with self._lock:
                self._spawn(component)
        for component in components:
            self._await_ready(component, fail_on_exit=True)
            self.console.note(f"{component.name} is ready")

    def stop(self) -> None:
        """Stop everything: gateway, services, prometheus, kafka, postgres. Idempotent."""
        if not self._started:
            return
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join()
            self._supervisor = None
        order = [["gateway"], list(SERVICES), ["prometheus"], ["kafka"], ["postgres"]]
        for names in order:
            present = [self.components[n] for n in names if n in self.components]
            threads = [
                threading.Thread(target=self._terminate, args=(component,)) for component in present
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None
        self._started = False
        atexit.unregister(self.stop)
