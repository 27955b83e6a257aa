"""Spawning, awaiting, stopping and restarting components: the supervisor and the
operations chaos tests drive (kill, pause, resume, stop, start, restart)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import StackBase
from .processes import Component, _child_setup, _signal_group, _tail
from .settings import REPO, StackError


class SupervisorMixin(StackBase):
    """Every component's process: started, watched, and signalled as a group."""

    _spawner: ThreadPoolExecutor | None
    _stopping: threading.Event

    if TYPE_CHECKING:
        # Postgres stops through pg_ctl (postgres.py), not by a signal to its leader.
        def _stop_postgres(self, component: Component) -> None: ...

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
                preexec_fn=_child_setup(component.nice),
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
