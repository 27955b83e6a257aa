"""The local stack behind `make run` and `make test`.

One `Stack` owns every process of a local deployment: a single-node KRaft Kafka broker,
a PostgreSQL cluster of its own, the four services, nginx as the one public origin, and
Prometheus. Everything lives under one run directory (`.run` for `make run`, `.run/test`
for `make test`), so a second start keeps all data and `make clean` wipes it.

    Stack.prepare()   install what is missing, generate secrets and the demo catalog
    Stack.start()     postgres + kafka -> services -> gateway + prometheus, each awaited
    Stack.stop()      the reverse order; nothing is left behind
    kill / pause / resume / restart / stop_component / start_component   for chaos tests

Like Kubernetes, a supervisor restarts any component that exits without being asked to,
with exponential backoff (1 s doubling to 30 s, reset after 60 s up). Every child runs in
its own process group, so signals reach the whole tree (a service's worker processes,
Postgres' backends), and dies with the runner even when the runner is killed -9.

The CLI (`python -m scripts.stack run|test|exec|status|clean`) also serves a small
control socket, `<run dir>/control.sock`, through which tests and chaos scripts drive the
stack (see `tests/stackctl.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from string import Template
from typing import IO, Any
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CACHE = REPO / ".cache"
SERVICES = ("vote_ingest", "antifraud", "tally", "lottery")
# Start order; stop is the reverse except that the gateway goes first (see Stack.stop).
COMPONENTS = ("postgres", "kafka", *SERVICES, "gateway", "prometheus")
TEST_PORT_OFFSET = 10_000
EXEC_PORT_OFFSET = 20_000
DEMO_POLL = "demo-reform"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# Variables that describe which stack a process talks to: a fresh test stack sets its
# own and ignores whatever the developer exported for `make run`.
STACK_OWNED = (
    "GATEWAY_PORT",
    "VOTE_INGEST_PORT",
    "ANTIFRAUD_PORT",
    "TALLY_PORT",
    "LOTTERY_PORT",
    "PROMETHEUS_PORT",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CONTROLLER_PORT",
    "DATABASE_URL",
    "POLLS_FILE",
    "CAPTCHA_SECRET",
    "VOTER_TOKEN_SECRET",
    "PII_KEY",
    "STAFF_TOKENS",
)


class StackError(RuntimeError):
    """The stack cannot be prepared or started; the message says what to do."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Ports:
    gateway: int = 8080
    vote_ingest: int = 8081
    antifraud: int = 8082
    tally: int = 8083
    lottery: int = 8084
    kafka: int = 9092
    kafka_controller: int = 9093
    postgres: int = 5433
    prometheus: int = 9090

    def offset(self, by: int) -> Ports:
        shifted = Ports(**{name: port + by for name, port in asdict(self).items()})
        highest = max(asdict(shifted).values())
        # Linux hands out 32768-60999 to outgoing connections: a listener there can find
        # its port taken by a client socket when it restarts (seen with Kafka).
        if highest >= 32768:
            raise StackError(f"port offset {by} puts a port at {highest}: keep them below 32768")
        return shifted

    @classmethod
    def from_env(cls, env: Mapping[str, str], base: Ports | None = None) -> Ports:
        """The contract's defaults (or `base`), each overridable from the environment."""
        values = asdict(base or cls())
        for name in ("gateway", *SERVICES, "prometheus", "kafka_controller"):
            var = f"{name.upper()}_PORT"
            if var in env:
                values[name] = _port(env[var], var)
        if "KAFKA_BOOTSTRAP_SERVERS" in env:
            first = env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0]
            values["kafka"] = _port(first.rpartition(":")[2], "KAFKA_BOOTSTRAP_SERVERS")
            if "KAFKA_CONTROLLER_PORT" not in env:
                values["kafka_controller"] = values["kafka"] + 1
        if "DATABASE_URL" in env:
            port = urllib.parse.urlsplit(env["DATABASE_URL"]).port
            values["postgres"] = port or 5432
        return cls(**values)


def _port(text: str, var: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise StackError(f"{var}={text!r} is not a port number")
    return int(text)


def _is_local(host: str | None) -> bool:
    return host in LOCAL_HOSTS


# --------------------------------------------------------------------------- console


_COLOURS = {
    "stack": "1",
    "postgres": "34",
    "kafka": "35",
    "vote_ingest": "32",
    "antifraud": "33",
    "tally": "36",
    "lottery": "92",
    "gateway": "94",
    "prometheus": "95",
}
_LEVEL_COLOURS = {"warning": "33", "error": "31", "critical": "31"}
_SKIP_KEYS = {"ts", "level", "service", "logger", "msg", "exc"}


class Console:
    """The combined console: runner notes always, component logs when `follow` is set.

    Components write straight into their own log files (complete even if the runner is
    slow or gone); the console tails those files, so it can never block a component.
    """

    def __init__(self, log_dir: Path, *, follow: bool, stream: IO[str] = sys.stdout) -> None:
        self.log_dir = log_dir
        self.follow = follow
        self.stream = stream
        self.colour = stream.isatty() and "NO_COLOR" not in os.environ
        self._lock = threading.Lock()
        self._files: dict[str, IO[bytes]] = {}
        self._partial: dict[str, bytes] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._broken = False

    def note(self, text: str) -> None:
        self._emit("stack", text)

    def banner(self, text: str) -> None:
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        # A console that went away (a closed terminal, `make run | tee` interrupted by the
        # same Ctrl-C) must not take the runner with it before it has stopped the stack.
        with self._lock:
            if self._broken:
                return
            try:
                self.stream.write(text)
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._broken = True

    def start(self) -> None:
        if self.follow and self._thread is None:
            for name in COMPONENTS:  # show only what is written from now on
                path = self.log_dir / f"{name}.log"
                if path.exists():
                    handle = path.open("rb")
                    handle.seek(0, os.SEEK_END)
                    self._files[name] = handle
            self._thread = threading.Thread(target=self._tail, name="console", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for handle in self._files.values():
            handle.close()

    def _tail(self) -> None:
        while not self._stopped.wait(0.2):
            self._read_all()
        self._read_all()

    def _read_all(self) -> None:
        for name in COMPONENTS:
            handle = self._files.get(name)
            if handle is None:
                path = self.log_dir / f"{name}.log"
                if not path.exists():
                    continue
                handle = self._files[name] = path.open("rb")
            data = self._partial.pop(name, b"") + handle.read()
            *lines, rest = data.split(b"\n")
            if rest:
                self._partial[name] = rest
            for line in lines:
                self._emit(name, self._format(line.decode(errors="replace")))

    def _format(self, line: str) -> str:
        if not line.startswith("{"):
            return line
        try:
            entry = json.loads(line)
            stamp = datetime.fromisoformat(entry["ts"]).astimezone().strftime("%H:%M:%S.%f")
            level = str(entry.get("level", "info"))
        except (ValueError, KeyError, TypeError):
            return line
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k not in _SKIP_KEYS)
        text = f"{stamp[:-3]} {level.upper():<7} {entry.get('msg', '')} {extra}".rstrip()
        if entry.get("exc"):
            text += "\n" + str(entry["exc"])
        if self.colour and level in _LEVEL_COLOURS:
            text = f"\033[{_LEVEL_COLOURS[level]}m{text}\033[0m"
        return text

    def _emit(self, name: str, text: str) -> None:
        prefix = f"{name:<11} |"
        if self.colour:
            prefix = f"\033[{_COLOURS.get(name, '0')}m{prefix}\033[0m"
        self._write("".join(f"{prefix} {part}\n" for part in text.splitlines() or [""]))


# --------------------------------------------------------------------------- processes


_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, after any change of user (a change of
    # credentials would clear it): if the runner dies, even by SIGKILL, the kernel sends
    # the child SIGTERM, so no broker or database outlives it holding a port.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Component:
    name: str
    port: int
    command: Callable[[], list[str]]
    ready: Callable[[], bool]
    ready_timeout: float
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    user: str | None = None
    env: Callable[[], dict[str, str]] | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    wanted: bool = False  # the supervisor keeps it running
    busy: bool = False  # an operation is in progress; the supervisor keeps off
    paused: bool = False
    restarts: int = 0
    backoff: float = 0.0
    next_start: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# Probes go straight to 127.0.0.1, never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _kafka_ready(bootstrap: str) -> bool:
    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await client.start()
            cluster = await client.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            await client.close()

    # Connection errors while the broker starts are expected: keep them off the console.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(probe(), timeout=5))
    except Exception:  # any failure means "not ready yet"
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text)


# --------------------------------------------------------------------------- packages


def _which(name: str, *extra_dirs: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=search)


def pg_bindir() -> Path | None:
    """The newest Debian PostgreSQL server binaries, or the ones on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = _which("initdb")
    return Path(found).parent if found else None


def missing_packages(*, browser: bool) -> list[str]:
    """Debian packages whose programs the stack needs and this machine lacks."""
    wanted = {
        "postgresql": pg_bindir() is not None,
        "nginx": _which("nginx") is not None,
        "prometheus": _which("prometheus") is not None,
        "default-jre-headless": _which("java") is not None,
        "maven": _which("mvn") is not None,
    }
    if browser:
        wanted["chromium"] = _which("chromium") is not None
        # The pages are Chinese; without a CJK font the browser draws boxes.
        wanted["fonts-wqy-microhei"] = Path(
            "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
        ).exists()
    return [package for package, present in wanted.items() if not present]


def install_packages(packages: Sequence[str], note: Callable[[str], None]) -> None:
    if not packages:
        return
    command = "apt-get install -y --no-install-recommends " + " ".join(packages)
    if os.geteuid() != 0 or _which("apt-get") is None:
        raise StackError(
            f"missing programs from the Debian packages: {' '.join(packages)}.\n"
            f"Install them (as root: {command}) or run this command as root."
        )
    note(f"installing {' '.join(packages)} (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    # Debian starts a package's daemon on install (a system nginx on :80, a system
    # Prometheus on :9090 that would take our port); policy-rc.d exit 101 forbids it.
    added_policy = not policy.exists()
    if added_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(command.split(), check=True, env=env)
    except subprocess.CalledProcessError as exc:
        raise StackError(f"`{command}` failed (exit {exc.returncode})") from None
    finally:
        if added_policy:
            policy.unlink()


def kafka_libs(note: Callable[[str], None]) -> Path:
    """Kafka's jars, resolved by Maven from the pinned pom, cached by the pom's hash."""
    pom = DEPLOY / "local" / "kafka" / "pom.xml"
    key = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = CACHE / "kafka-libs" / key
    if (libs / ".complete").exists():
        return libs
    note("resolving the Kafka jars with Maven (first run only)")
    partial = libs.with_name(key + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={partial}"]
    command = ["mvn", "-q", "-B", "-f", str(pom), *goal]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(partial.glob("kafka_*.jar")):
        raise StackError(
            "Maven could not resolve Apache Kafka's jars from deploy/local/kafka/pom.xml:\n"
            + (result.stdout + result.stderr)[-3000:]
        )
    (partial / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs


# --------------------------------------------------------------------------- the stack


class _AtTemplate(Template):
    delimiter = "@@"  # nginx configs are full of $variables


@dataclass
class _Secrets:
    values: dict[str, str] = field(default_factory=dict)
    staff_token: str | None = None


class Stack:
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

    # ---- addresses

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

    # ---- environment

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

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(self.components)
            raise StackError(f"no component {name!r} (known: {known})") from None

    # services

    @staticmethod
    def _service_command(name: str) -> list[str]:
        if not (REPO / "services" / name / "main.py").exists():
            raise StackError(f"services/{name}/main.py is missing")
        return [sys.executable, "-m", f"services.{name}.main"]

    def _service_ready(self, name: str) -> bool:
        return http_status(f"{self.service_url(name)}/readyz") == 200

    # postgres

    @property
    def pg_dir(self) -> Path:
        return (self.run_dir / "pg").resolve()

    def _pg(self, tool: str) -> str:
        if self._pg_bin is None:
            raise StackError("PostgreSQL's programs were not found: prepare() first")
        return str(self._pg_bin / tool)

    def _postgres_command(self) -> list[str]:
        # TCP only: socket paths under a deep checkout exceed the 107-byte limit.
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=200",
            "max_locks_per_transaction=1024",
            # Statement counts per query (CREATE EXTENSION pg_stat_statements to read them).
            "shared_preload_libraries=pg_stat_statements",
        ]
        options = [part for setting in settings for part in ("-c", setting)]
        data = str(self.pg_dir / "data")
        return [self._pg("postgres"), "-D", data, "-p", str(self.ports.postgres), *options]

    def _postgres_ready(self) -> bool:
        command = [self._pg("pg_isready"), "-q", *self._pg_connect(), "-d", "postgres"]
        return subprocess.run(command, check=False, timeout=10).returncode == 0

    def _init_postgres(self) -> None:
        home = self._pg_home()
        if (home / "data" / "PG_VERSION").exists():
            return
        self.console.note(f"creating the PostgreSQL cluster in {home / 'data'}")
        shutil.rmtree(home / "data", ignore_errors=True)
        # Trust is for local development only: the server listens on 127.0.0.1 alone.
        command = [self._pg("initdb"), "-D", str(home / "data"), f"--username={self.db_user}"]
        command += ["--auth=trust", "--encoding=UTF8", "--no-locale"]
        self._run_as_postgres(command, self.log_dir / "postgres.log")

    def _pg_home(self) -> Path:
        link = self.run_dir / "pg"
        if link.exists():
            return link.resolve()
        if link.is_symlink():  # its cluster under /var/tmp is gone
            link.unlink()
        user = self.component("postgres").user
        if user is None:
            link.mkdir(parents=True)
            return link
        # Postgres refuses to run as root, so its files belong to the postgres user, who
        # must be able to reach them: a checkout under /root is not reachable, and then
        # the cluster lives under /var/tmp with a link from the run directory.
        home = link
        if not self._reachable_by(user, self.run_dir):
            digest = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:12]
            home = Path("/var/tmp/votes-pg") / digest  # noqa: S108 (owned, 0700)
            shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True, mode=0o700)
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        if home != link:
            link.symlink_to(home)
        return home

    @staticmethod
    def _reachable_by(user: str, path: Path) -> bool:
        command = ["test", "-x", str(path)]
        return subprocess.run(command, user=user, check=False).returncode == 0

    def _run_as_postgres(self, command: list[str], log: Path) -> None:
        user = self.component("postgres").user
        with log.open("ab") as out:
            result = subprocess.run(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd="/",
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"`{' '.join(command)}` failed; see {log}:\n{_tail(log)}")

    def _pg_connect(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U", self.db_user]

    def _create_database(self) -> None:
        command = [self._pg("createdb"), *self._pg_connect(), self.db_name]
        created = subprocess.run(command, capture_output=True, text=True, check=False)
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise StackError(f"could not create database {self.db_name}: {created.stderr}")

    def _stop_postgres(self, component: Component) -> None:
        command = [self._pg("pg_ctl"), "stop", "-D", str(self.pg_dir / "data"), "-m", "fast"]
        command += ["-w", "-t", str(int(component.stop_timeout))]
        try:
            self._run_as_postgres(command, self.log_dir / "postgres.log")
        except StackError:
            if component.proc is not None:  # pg_ctl could not: signal the postmaster
                _signal_group(component.proc.pid, signal.SIGINT)

    # kafka

    def _kafka_command(self) -> list[str]:
        if self._libs is None:
            raise StackError("Kafka's jars were not resolved: prepare() first")
        heap = self.overrides.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
        return [
            "java",
            *heap,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={DEPLOY / 'local' / 'log4j2.yaml'}",
            "-cp",
            f"{self._libs}/*",
            "kafka.Kafka",
            str(self.run_dir / "kafka" / "server.properties"),
        ]

    def _init_kafka(self) -> None:
        kafka_dir = self.run_dir / "kafka"
        props = kafka_dir / "server.properties"
        template = Template((DEPLOY / "local" / "server.properties.in").read_text())
        kafka_dir.mkdir(parents=True, exist_ok=True)
        props.write_text(
            template.substitute(
                KAFKA_PORT=self.ports.kafka,
                KAFKA_CONTROLLER_PORT=self.ports.kafka_controller,
                KAFKA_LOG_DIR=kafka_dir / "data",
            )
        )
        if (kafka_dir / "data" / "meta.properties").exists():
            return
        self.console.note("formatting the Kafka log directory (first run only)")
        shutil.rmtree(kafka_dir / "data", ignore_errors=True)
        java = self._kafka_command()[:-2]  # the JVM and class path, without the server
        command = [*java, "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id()]
        command += ["-c", str(props), "--standalone"]
        log = self.log_dir / "kafka.log"
        with log.open("ab") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            raise StackError(f"formatting Kafka's storage failed; see {log}:\n{_tail(log)}")

    # gateway and prometheus

    def _gateway_command(self) -> list[str]:
        nginx_dir = self.run_dir / "nginx"
        user_directive = "# runs as the invoking user"
        if os.geteuid() == 0:
            # Workers drop root; they write request bodies and buffers to these folders.
            nobody = pwd.getpwnam("nobody")
            for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
                path = nginx_dir / "tmp" / sub
                path.mkdir(parents=True, exist_ok=True)
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            import grp

            user_directive = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
        template = _AtTemplate((DEPLOY / "local" / "nginx.conf.in").read_text())
        conf = nginx_dir / "nginx.conf"
        conf.write_text(
            template.substitute(
                USER_DIRECTIVE=user_directive,
                RUN_DIR=self.run_dir,
                LOG_DIR=self.log_dir,
                GATEWAY_HOST=self.gateway_host,
                GATEWAY_PORT=self.ports.gateway,
                **{f"{name.upper()}_PORT": getattr(self.ports, name) for name in SERVICES},
            )
        )
        nginx = _which("nginx") or "nginx"
        return [nginx, "-e", "stderr", "-p", str(nginx_dir), "-c", str(conf)]

    def _prometheus_command(self) -> list[str]:
        prom_dir = self.run_dir / "prometheus"
        template = Template((DEPLOY / "prometheus" / "prometheus.yml.in").read_text())
        conf = prom_dir / "prometheus.yml"
        conf.write_text(
            template.substitute(
                REPO_DIR=REPO,
                **{f"{name.upper()}_PORT": getattr(self.ports, name) for name in SERVICES},
            )
        )
        return [
            _which("prometheus") or "prometheus",
            f"--config.file={conf}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
            "--log.level=warn",
        ]

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

    def _spawn(self, component: Component) -> None:
        if self._spawner is None:
            raise StackError("the stack is not started")
        command = component.command()
        log_path = self.log_dir / f"{component.name}.log"
        env = component.env() if component.env is not None else dict(os.environ)
        user = component.user
        with log_path.open("ab") as log:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            log.write(f"--- {stamp} stack: starting {' '.join(command)}\n".encode())
            log.flush()
            # Popen runs on one long-lived thread: the kernel ties "dies with its parent"
            # to the thread that forked, and control requests come on short-lived ones.
            component.proc = self._spawner.submit(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                preexec_fn=_die_with_parent,
            ).result()
        component.started_at = time.monotonic()
        component.wanted = True
        component.paused = False
        component.next_start = None

    def _await_ready(
        self, component: Component, *, fail_on_exit: bool, timeout: float | None = None
    ) -> None:
        timeout = component.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        log = self.log_dir / f"{component.name}.log"
        while time.monotonic() < deadline:
            proc = component.proc
            if fail_on_exit and proc is not None and proc.poll() is not None:
                raise StackError(
                    f"{component.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {log}:\n{_tail(log)}"
                )
            if proc is not None and component.ready():
                return
            time.sleep(0.25)
        raise StackError(
            f"{component.name} was not ready within {timeout:.0f} s; "
            f"last lines of {log}:\n{_tail(log)}"
        )

    def wait_ready(self, name: str, timeout: float | None = None) -> None:
        """Wait until the component answers its readiness check (through restarts)."""
        self._await_ready(self.component(name), fail_on_exit=False, timeout=timeout)

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

    def _terminate(self, component: Component) -> None:
        with self._lock:
            component.wanted = False
            component.next_start = None
            proc = component.proc
        if proc is None:
            return
        if proc.poll() is None:
            if component.paused:
                _signal_group(proc.pid, signal.SIGCONT)
            if component.name == "postgres":
                self._stop_postgres(component)
            else:
                # Only the leader gets the polite signal, as in Kubernetes; it shuts
                # down its own children (uvicorn workers, the captcha renderer pool).
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(component.stop_signal)
            try:
                proc.wait(timeout=component.stop_timeout)
            except subprocess.TimeoutExpired:
                self.console.note(f"{component.name} did not stop in time: killing it")
        # Whatever is left in the group (orphaned workers, backends) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with self._lock:
            component.proc = None
            component.paused = False

    # ---- supervisor

    def _supervise(self) -> None:
        while not self._stopping.wait(0.25):
            for component in self.components.values():
                with self._lock:
                    if not component.busy and not self._stopping.is_set():
                        self._check(component)

    def _check(self, component: Component) -> None:
        now = time.monotonic()
        if component.proc is None:
            if component.wanted and component.next_start is not None:
                if now >= component.next_start:
                    self.console.note(f"restarting {component.name}")
                    try:
                        self._spawn(component)
                    except (StackError, OSError) as exc:
                        component.backoff = min(max(component.backoff * 2, 1.0), 30.0)
                        component.next_start = now + component.backoff
                        self.console.note(f"could not restart {component.name}: {exc}")
            return
        code = component.proc.poll()
        if code is None:
            return
        _signal_group(component.proc.pid, signal.SIGKILL)
        component.proc = None
        if not component.wanted:
            return
        up = now - component.started_at
        component.backoff = 1.0 if up >= 60 or component.backoff == 0 else component.backoff * 2
        component.backoff = min(component.backoff, 30.0)
        component.next_start = now + component.backoff
        component.restarts += 1
        self.console.note(
            f"{component.name} exited (code {code}) after {up:.0f} s; "
            f"restart #{component.restarts} in {component.backoff:.0f} s"
        )

    # ---- control

    @contextlib.contextmanager
    def _operating(self, name: str) -> Iterator[Component]:
        component = self.component(name)
        with self._lock:
            if component.busy:
                raise StackError(f"{name}: another operation is in progress")
            component.busy = True
        try:
            yield component
        finally:
            with self._lock:
                component.busy = False

    def pid(self, name: str) -> int | None:
        return self.component(name).pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the component's whole process group, as a crash would.

        The component stays wanted, so when it dies the supervisor restarts it.
        """
        component = self.component(name)
        with self._lock:
            if component.proc is None:
                raise StackError(f"{name} is not running")
            _signal_group(component.proc.pid, sig)
            if sig == signal.SIGSTOP:
                component.paused = True
            elif component.paused:
                # A stopped process acts on no other signal until it continues.
                _signal_group(component.proc.pid, signal.SIGCONT)
                component.paused = False

    def pause(self, name: str) -> None:
        self.kill(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.kill(name, signal.SIGCONT)

    def stop_component(self, name: str) -> None:
        """Stop gracefully and keep it down (the supervisor leaves it alone)."""
        with self._operating(name) as component:
            self._terminate(component)

    def start_component(self, name: str, *, wait: bool = True) -> None:
        with self._operating(name) as component:
            if component.proc is not None and component.proc.poll() is None:
                return
            with self._lock:
                self._spawn(component)
            if wait:
                self._await_ready(component, fail_on_exit=False)

    def restart(self, name: str) -> None:
        with self._operating(name) as component:
            self._terminate(component)
            with self._lock:
                self._spawn(component)
            self._await_ready(component, fail_on_exit=False)

    def status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                name: {
                    "pid": c.pid,
                    "port": c.port,
                    "wanted": c.wanted,
                    "paused": c.paused,
                    "restarts": c.restarts,
                    "log": str(self.log_dir / f"{name}.log"),
                }
                for name, c in self.components.items()
            }


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _kafka_cluster_id() -> str:
    # Kafka's own format (Uuid.randomUuid): 16 random bytes, URL-safe base64 without
    # padding, never starting with "-" (it would read as a command-line option).
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


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
            "参与投票的天数越多，抽奖中签机会越大。\n\n"
            "Demo poll: please rate the district's urban renewal project. One vote per "
            "person per day; every day you vote raises your chance in the prize draw."
        ),
        "options": ["excellent", "good", "fair", "poor"],
        "opens_at": datetime.combine(today, clock(0), zone),
        "closes_at": datetime.combine(today + timedelta(days=14), clock(9), zone),
        "timezone": "Asia/Shanghai",
        "daily_limit": 1,
        "results": "live",
        "lottery": {"prizes": 30, "prize": "青年文化盲盒", "reserves": 10},
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


# --------------------------------------------------------------------------- control socket


class ControlServer(socketserver.ThreadingUnixStreamServer):
    """JSON lines on `<run dir>/control.sock`: one request, one answer per connection.

    Request  {"op": "kill", "name": "tally", "signal": 9}, {"op": "wait_ready", "wait": 30}
    Answer   {"ok": true, "result": ...} or {"ok": false, "error": "..."}
    Ops: status, pid, kill, pause, resume, restart, stop, start, wait_ready, env.
    """

    daemon_threads = True

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.path = stack.run_dir / "control.sock"
        if len(os.fsencode(self.path)) > 100:
            raise StackError(f"the run directory's path is too long for a socket: {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        super().__init__(str(self.path), _ControlHandler)
        self.path.chmod(0o600)
        self._thread = threading.Thread(target=self.serve_forever, name="control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def handle_request_json(self, request: dict[str, Any]) -> object:
        stack, op, name = self.stack, request.get("op"), str(request.get("name", ""))
        wait = request.get("wait")
        match op:
            case "status":
                return stack.status()
            case "env":
                return stack.client_env()
            case "pid":
                return stack.pid(name)
            case "kill":
                stack.kill(name, int(request.get("signal", signal.SIGKILL)))
            case "pause":
                stack.pause(name)
            case "resume":
                stack.resume(name)
            case "restart":
                stack.restart(name)
            case "stop":
                stack.stop_component(name)
            case "start":
                stack.start_component(name)
            case "wait_ready":
                stack.wait_ready(name, float(wait) if wait is not None else None)
            case _:
                raise StackError(f"unknown op {op!r}")
        return None


class _ControlHandler(socketserver.StreamRequestHandler):
    server: ControlServer

    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline())
            answer = {"ok": True, "result": self.server.handle_request_json(request)}
        except Exception as exc:  # every failure goes back to the caller, not the log
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


def control_request(run_dir: Path, request: Mapping[str, object], timeout: float = 5) -> Any:
    """Send one request to the stack running in `run_dir` (tests use tests/stackctl.py)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(run_dir / "control.sock"))
        client.sendall(json.dumps(dict(request)).encode() + b"\n")
        answer = json.loads(client.makefile("rb").readline())
    if not answer["ok"]:
        raise StackError(answer["error"])
    return answer["result"]


def stack_running(run_dir: Path) -> bool:
    try:
        control_request(run_dir, {"op": "status"}, timeout=2)
    except (OSError, ValueError, StackError):
        return False
    return True


# --------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP end the runner like Ctrl-C does, so stop() runs in order."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[ControlServer]:
    """A started stack with its control socket; stopped on the way out, whatever happens."""
    if stack_running(stack.run_dir):
        raise StackError(f"a stack is already running in {stack.run_dir}")
    started = time.monotonic()
    stack.console.start()
    try:
        stack.prepare()
        stack.start()
        control = ControlServer(stack)
        control.start()
        stack.console.note(f"stack is up in {time.monotonic() - started:.1f} s")
        try:
            yield control
        finally:
            control.close()
    finally:
        if threading.current_thread() is threading.main_thread():
            # A second Ctrl-C must not cut the ordered shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.console.note("stopping")
        stack.stop()
        stack.console.close()
        stack.console.note("stopped")


def _banner(stack: Stack) -> str:
    lines = [
        "",
        f"  Voting site     {stack.gateway_url}/",
    ]
    for poll in _open_polls(stack.polls_file):
        lines.append(f"  Poll page       {stack.gateway_url}/polls/{poll}")
    token = stack.staff_token_file if "STAFF_TOKENS" not in stack.overrides else None
    where = f"token in {_rel(token)}" if token else "tokens from STAFF_TOKENS"
    lines += [
        f"  Staff console   {stack.gateway_url}/staff/   ({where})",
        f"  Prometheus      {stack.prometheus_url}/",
        f"  Logs            {_rel(stack.log_dir)}/",
        "",
        "  Ctrl-C stops everything; data stays in .run/ until `make clean`.",
        "",
    ]
    return "\n".join(lines)


def _open_polls(path: Path) -> list[str]:
    from shared.catalog import PollState, load_catalog

    now = datetime.now().astimezone()
    catalog = load_catalog(path)
    return [poll.id for poll in catalog.polls if poll.state_at(now) == PollState.OPEN][:3]


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def cmd_run(args: argparse.Namespace) -> int:
    run_dir = REPO / ".run"
    stack = Stack(
        run_dir,
        Ports.from_env(os.environ),
        os.environ,
        console=Console(run_dir / "logs", follow=True),
    )
    with _signals_raise(), contextlib.suppress(KeyboardInterrupt), running(stack):
        stack.console.banner(_banner(stack))
        threading.Event().wait()
    return 0


def _fresh_stack(name: str, offset: int, *, browser: bool) -> Stack:
    run_dir = REPO / ".run" / name
    if stack_running(run_dir):
        raise StackError(f"a stack is already running in {run_dir}")
    _wipe(run_dir)
    env = {k: v for k, v in os.environ.items() if k not in STACK_OWNED}
    ports = Ports().offset(offset)
    console = Console(run_dir / "logs", follow=False, stream=sys.stderr)
    hint = f"shift all its ports with --port-offset (now {offset}; make: TEST_PORT_OFFSET=...)"
    return Stack(run_dir, ports, env, console=console, browser=browser, port_hint=hint)


def _run_child(command: Sequence[str], env: Mapping[str, str], timeout: float | None) -> int:
    proc = subprocess.Popen(list(command), env=dict(env), cwd=Path.cwd())
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGINT makes pytest print where it hangs before it exits: a hung CI job then
        # fails with a traceback instead of running until the CI system kills it.
        print(f"stack: {command[0]} ran over {timeout:.0f} s: interrupting it", file=sys.stderr)
        _interrupt(proc)
        return 124
    except KeyboardInterrupt:
        _interrupt(proc)
        raise


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _after_dashes(args: list[str]) -> list[str]:
    return args[1:] if args[:1] == ["--"] else args


def cmd_test(args: argparse.Namespace) -> int:
    stack = _fresh_stack("test", args.port_offset, browser=True)
    report = REPO / "test-artifacts" / "junit.xml"
    report.parent.mkdir(exist_ok=True)
    report.unlink(missing_ok=True)
    pytest_args = _after_dashes(args.args)
    command = [sys.executable, "-m", "pytest", f"--junitxml={report}", *pytest_args]
    with _signals_raise(), running(stack):
        stack.console.note(f"running {' '.join(command[1:])}")
        code = _run_child(command, stack.client_env(), args.timeout)
    stack.console.note(f"component logs of this run: {_rel(stack.log_dir)}/")
    return _judge_tests(code, report)


def _judge_tests(code: int, report: Path) -> int:
    """pytest's status, except that "no tests ran" and, in CI, skipped stack tests fail."""
    if code == 5:
        print("stack: FAILED: pytest collected no tests", file=sys.stderr)
        return 5
    if code != 0:
        return code
    if not report.exists():
        print(f"stack: FAILED: pytest wrote no report to {report}", file=sys.stderr)
        return 1
    root = ElementTree.parse(report).getroot()  # noqa: S314 (our own pytest's report)
    cases = list(root.iter("testcase"))
    if not cases:
        print("stack: FAILED: no test ran", file=sys.stderr)
        return 1
    skipped = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in cases
        for skip in case.findall("skipped")
        if skip.get("type") == "pytest.skip"
        and str(case.get("classname", "")).startswith(("tests.integration", "tests.e2e"))
    ]
    if skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        print("stack: FAILED: stack tests were skipped in CI:", file=sys.stderr)
        print("\n".join("  " + name for name in skipped), file=sys.stderr)
        return 1
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = _after_dashes(args.args)
    if not command:
        raise StackError("nothing to run: python -m scripts.stack exec --name NAME -- COMMAND")
    stack = _fresh_stack(args.name, args.port_offset, browser=False)
    with _signals_raise(), running(stack):
        stack.console.note(f"running {' '.join(command)}")
        return _run_child(command, stack.client_env(), args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = REPO / ".run" / args.name if args.name else REPO / ".run"
    status = control_request(run_dir, {"op": "status"})
    for name, info in status.items():
        state = "paused" if info["paused"] else ("up" if info["pid"] else "down")
        print(
            f"{name:<11} {state:<7} pid={info['pid']} port={info['port']} "
            f"restarts={info['restarts']}"
        )
    return 0


def _wipe(run_dir: Path) -> None:
    pg = run_dir / "pg"
    if pg.is_symlink():
        shutil.rmtree(pg.resolve(), ignore_errors=True)
    for link in run_dir.glob("*/pg"):
        if link.is_symlink():
            shutil.rmtree(link.resolve(), ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def cmd_clean(args: argparse.Namespace) -> int:
    run_dir = REPO / ".run"
    busy = [d for d in (run_dir, *run_dir.glob("*")) if d.is_dir() and stack_running(d)]
    if busy:
        raise StackError(f"a stack is running in {busy[0]}: stop it (Ctrl-C) first")
    _wipe(run_dir)
    if args.all:
        shutil.rmtree(CACHE, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the stack in the foreground (make run)")
    test = commands.add_parser("test", help="run pytest against a fresh stack (make test)")
    test.add_argument("--port-offset", type=int, default=TEST_PORT_OFFSET)
    test.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run")
    test.add_argument("args", nargs=argparse.REMAINDER, help="-- pytest arguments")
    run = commands.add_parser("exec", help="run a command against a fresh stack")
    run.add_argument("--name", required=True, help="run directory under .run/")
    run.add_argument("--port-offset", type=int, default=EXEC_PORT_OFFSET)
    run.add_argument("--timeout", type=float, default=None, help="seconds (default: none)")
    run.add_argument("args", nargs=argparse.REMAINDER, help="-- command and arguments")
    status = commands.add_parser("status", help="show the components of a running stack")
    status.add_argument("--name", help="run directory under .run/ (default: make run's)")
    clean = commands.add_parser("clean", help="delete .run (and .cache with --all)")
    clean.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": cmd_run,
        "test": cmd_test,
        "exec": cmd_exec,
        "status": cmd_status,
        "clean": cmd_clean,
    }
    try:
        return handlers[args.command](args)
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
