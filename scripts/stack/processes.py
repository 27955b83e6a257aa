"""One component's process and the small probes around it.

Every child runs in its own process group and dies with the runner; signals go to the
whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, after any change of user (a change of
    # credentials would clear it): if the runner dies, even by SIGKILL, the kernel sends
    # the child SIGTERM, so no broker or database outlives it holding a port.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child_setup(nice: int) -> Callable[[], None]:
    def setup() -> None:
        _die_with_parent()
        if nice:
            os.nice(nice)

    return setup


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
    nice: int = 0  # added to the runner's niceness
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


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text)
