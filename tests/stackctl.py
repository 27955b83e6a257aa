"""Drive the running local stack from a test: crash, pause, restart its components.

`make test` (python -m scripts.stack test) starts the stack and serves a control socket at
`$STACK_RUN_DIR/control.sock`; this client speaks its protocol (one JSON line each way).
Components: vote_ingest, antifraud, tally, lottery, kafka, postgres, gateway, prometheus.

    stack.kill("tally")             # SIGKILL to the whole process group: a crash; the
                                    # supervisor restarts it (1 s backoff, doubling)
    stack.pause("antifraud")        # SIGSTOP: alive but unresponsive, like a GC stall
    stack.resume("antifraud")       # SIGCONT
    stack.stop("kafka")             # graceful stop; stays down until start()
    stack.start("kafka")            # start and wait until ready
    stack.restart("postgres")       # graceful stop, start, wait until ready
    stack.wait_ready("tally", 30)   # through restarts, until its readiness check passes
    stack.pid("tally")              # None while it is down

The calls block; from async tests use `await asyncio.to_thread(stack.kill, "tally")`.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

COMPONENTS = (
    "vote_ingest",
    "antifraud",
    "tally",
    "lottery",
    "kafka",
    "postgres",
    "gateway",
    "prometheus",
)


class StackControlError(RuntimeError):
    """The stack refused or failed an operation; the message is the runner's."""


class StackControl:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.socket_path = run_dir / "control.sock"

    def _call(self, op: str, timeout: float = 10.0, **fields: Any) -> Any:
        request = json.dumps({"op": op, **fields}).encode() + b"\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(self.socket_path))
            client.sendall(request)
            with client.makefile("rb") as reader:
                line = reader.readline()
        if not line:
            raise StackControlError(f"{op}: the stack closed the connection without an answer")
        answer = json.loads(line)
        if not answer["ok"]:
            raise StackControlError(f"{op} {fields.get('name', '')}: {answer['error']}")
        return answer["result"]

    def status(self) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self._call("status")
        return result

    def pid(self, name: str) -> int | None:
        result: int | None = self._call("pid", name=name)
        return result

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self._call("kill", name=name, signal=int(sig))

    def pause(self, name: str) -> None:
        self._call("pause", name=name)

    def resume(self, name: str) -> None:
        self._call("resume", name=name)

    def stop(self, name: str, timeout: float = 60.0) -> None:
        self._call("stop", timeout=timeout, name=name)

    def start(self, name: str, timeout: float = 120.0) -> None:
        self._call("start", timeout=timeout, name=name)

    def restart(self, name: str, timeout: float = 180.0) -> None:
        self._call("restart", timeout=timeout, name=name)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        # The runner waits `timeout`; the socket allows a little more for its answer.
        self._call("wait_ready", timeout=timeout + 10, name=name, wait=timeout)

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60.0) -> int:
        """Wait for a new process of `name` (not `old_pid`) and for it to be ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid(name)
            if pid is not None and pid != old_pid:
                self.wait_ready(name, max(1.0, deadline - time.monotonic()))
                return pid
            time.sleep(0.2)
        raise StackControlError(f"{name} was not restarted within {timeout:.0f} s")
