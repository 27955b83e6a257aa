"""The combined console of the runner and its components."""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO

from .settings import COMPONENTS

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
