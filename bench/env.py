"""Where a benchmark runs: a fresh local stack of its own, or a Kafka and Postgres given.

Fresh (the default, `make bench`): :class:`scripts.stack.Stack` in ``.run/bench`` on its
own ports (the contract's defaults + 22000), wiped before and stopped after. The bench
measures the services it launches itself (so the ingest service and the bare endpoint
are started the same way) and the consumers it runs in-process, so the stack's own
services are stopped once it is up: they would otherwise compete for the same cores.

Given (``--kafka`` and ``--database-url``): an already running broker and database,
for trial runs; topics, consumer groups and schemas are unique per run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from scripts.stack import http_status

REPO = Path(__file__).resolve().parent.parent
BENCH_POLL = "bench-poll"
# Every port must stay below the ephemeral range (32768+): a client socket could hold it.
BENCH_PORT_OFFSET = 22_000
NAT_ALLOWLIST = ("100.64.0.0/10",)
# The stack's components the bench does not measure; stopped so they stay off the cores.
IDLE_COMPONENTS = ("gateway", "prometheus", "lottery", "tally", "antifraud", "vote_ingest")


def write_catalog(path: Path, now: datetime | None = None) -> Path:
    """A catalog with one poll open from a day ago to a day ahead.

    Carrier-NAT space is on the rate-limit allowlist: hundreds of honest phones share
    one such address, and the mix sends a share of its votes from one.
    """
    now = now or datetime.now(UTC)
    poll = {
        "id": BENCH_POLL,
        "title": "Benchmark poll",
        "options": ["excellent", "good", "fair", "poor"],
        "opens_at": (now - timedelta(days=1)).isoformat(),
        "closes_at": (now + timedelta(days=1)).isoformat(),
        "timezone": "Asia/Shanghai",
        "daily_limit": 1,
        "results": "live",
        "rate_limits": {"allowlist": list(NAT_ALLOWLIST)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"polls": [poll]}, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _proc_stat(pid: int) -> list[str] | None:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def process_tree(pid: int) -> set[int]:
    """``pid`` and its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return tree


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants,
    with what their exited children used: Postgres' postmaster is credited with each
    backend's time when it reaps it, so a closed connection's work is not lost."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in process_tree(pid):
        fields = _proc_stat(member)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15]) / ticks
    return total


def _status_kib(pid: int, field_name: str, source: str = "status") -> int:
    try:
        text = (Path("/proc") / str(pid) / source).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def process_tree_memory(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid``'s tree in MiB: (RSS summed, PSS summed).

    RSS counts pages shared between the tree's processes (Postgres' shared buffers) once
    per process; PSS splits each shared page among the processes that map it.
    """
    rss = pss = 0
    for member in process_tree(pid):
        rss += _status_kib(member, "VmRSS")
        pss += _status_kib(member, "Pss", "smaps_rollup")
    return rss / 1024, pss / 1024


@dataclass
class Process:
    """A server the bench launched; stopped by its own process group id."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.proc.pid)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def stop_like_ctrl_c() -> None:
    """Let SIGTERM unwind the bench as Ctrl-C does. The servers it launches run in
    sessions of their own, out of reach of a signal to the bench's process group: only
    the bench's own clean-up stops them, and a plain SIGTERM skipped it."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def launch(
    name: str,
    module_args: Sequence[str],
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    *,
    ready_path: str = "/readyz",
    timeout: float = 90.0,
    nice: int = 0,
) -> Process:
    """Start ``python -m <module_args>`` in its own session and wait until it is ready.

    ``nice`` is added to the bench's niceness before the interpreter has imported
    anything, so the process and the children it starts later run at it.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=REPO,
            start_new_session=True,
        )
    if nice:
        os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    process = Process(name, url, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
        if http_status(url + ready_path) == 200:
            return process
        time.sleep(0.2)
    process.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:.0f} s; see {log}")


@dataclass
class BenchEnv:
    """What every part needs: the broker, the database, secrets and a place for files."""

    kafka_bootstrap: str
    database_url: str
    run_dir: Path
    service_env: dict[str, str]
    description: str

    @property
    def captcha_secret(self) -> str:
        return self.service_env["CAPTCHA_SECRET"]

    @property
    def voter_token_secret(self) -> str:
        return self.service_env["VOTER_TOKEN_SECRET"]

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "bench-logs"

    @property
    def polls_file(self) -> Path:
        return Path(self.service_env["POLLS_FILE"])


def _with_bench_settings(env: Mapping[str, str], run_dir: Path) -> dict[str, str]:
    catalog = write_catalog(run_dir / "bench-polls.yaml")
    return {
        **env,
        "POLLS_FILE": str(catalog),
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "PYTHONUNBUFFERED": "1",
    }


def given_env(kafka: str, database_url: str, run_dir: Path) -> BenchEnv:
    """An existing broker and database; secrets are made up for this run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": database_url,
        "CAPTCHA_SECRET": secrets.token_urlsafe(32),
        "VOTER_TOKEN_SECRET": secrets.token_urlsafe(32),
    }
    return BenchEnv(
        kafka,
        database_url,
        run_dir,
        _with_bench_settings(env, run_dir),
        "an existing Kafka and PostgreSQL given on the command line",
    )


def inside_stack() -> Path | None:
    """The run directory of the stack this process was started under, if any."""
    run_dir = os.environ.get("STACK_RUN_DIR")
    return Path(run_dir) if run_dir else None


def stack_env(run_dir: Path) -> BenchEnv:
    """The fresh stack this process runs under, with its unmeasured services stopped."""
    from scripts.stack import control_request

    status = control_request(run_dir, {"op": "status"})
    for name in IDLE_COMPONENTS:
        if name in status and status[name]["pid"] is not None:
            control_request(run_dir, {"op": "stop", "name": name}, timeout=60)
    env = dict(os.environ)
    return BenchEnv(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        env["DATABASE_URL"],
        run_dir,
        _with_bench_settings(env, run_dir),
        f"a fresh local stack in {_relative(run_dir)} (Kafka and PostgreSQL of its own)",
    )


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)


def run_under_fresh_stack(argv: Sequence[str]) -> int:
    """Re-run ``python -m bench.run argv`` under a fresh stack in ``.run/bench``.

    The stack runner wipes the run directory, starts Kafka, Postgres and the services on
    the contract's ports + 22000, runs the command with the stack's addresses and
    secrets in its environment, and stops everything afterwards, whatever happens.
    """
    command = [sys.executable, "-m", "scripts.stack", "exec", "--name", "bench"]
    command += ["--port-offset", str(BENCH_PORT_OFFSET), "--"]
    command += [sys.executable, "-m", "bench.run", *argv]
    return subprocess.run(command, cwd=REPO, check=False).returncode
