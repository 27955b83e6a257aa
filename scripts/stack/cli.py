"""`python -m scripts.stack run|test|exec|status|clean`."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

from scripts import stack as package

from .console import Console
from .control import ControlServer, control_request, stack_running
from .settings import (
    CACHE,
    EXEC_PORT_OFFSET,
    REPO,
    STACK_OWNED,
    TEST_PORT_OFFSET,
    Ports,
    StackError,
)
from .stack import Stack


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
    lines += _poll_lines(stack)
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


def _poll_lines(stack: Stack) -> list[str]:
    """The open polls' pages; when none is open, why, so a quiet banner is not a puzzle."""
    from shared.catalog import PollState, load_catalog

    now = datetime.now().astimezone()
    polls = load_catalog(stack.polls_file).polls
    pages = [
        f"  Poll page       {stack.gateway_url}/polls/{poll.id}"
        for poll in polls
        if poll.state_at(now) == PollState.OPEN
    ]
    if pages:
        return pages[:3]
    upcoming = [poll for poll in polls if poll.state_at(now) == PollState.UPCOMING]
    if upcoming:
        first = min(upcoming, key=lambda poll: poll.opens_at)
        opens = first.opens_at.astimezone(first.zone)
        return [f"  No poll is open yet: {first.id} opens at {opens:%Y-%m-%d %H:%M %Z}."]
    if "POLLS_FILE" in stack.overrides:
        return [f"  No poll is open: every poll of {stack.polls_file} has closed."]
    return [
        "  No poll is open: the demo poll's two weeks are over. `make clean` (which",
        "  deletes all local data) then `make run` starts a new one from today.",
    ]


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
    try:
        status = control_request(run_dir, {"op": "status"})
    except OSError:
        where = f"--name {args.name}" if args.name else "make run"
        print(
            f"stack: no stack is running ({where}: nothing answers on {run_dir.name}/control.sock)"
        )
        return 1
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
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=package.__doc__)
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
