"""The control socket through which tests and chaos scripts drive a running stack."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .settings import StackError
from .stack import Stack


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
