"""The bench's reading of a process tree's CPU time, and how it launches servers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench.env import REPO, free_port, launch, process_tree, process_tree_cpu

BUSY = "import time\nwhile time.process_time() < 0.5: pass"


def test_cpu_of_an_exited_child_stays_counted_in_its_parent() -> None:
    # The shell runs a child that burns 0.5 CPU s and exits, then waits: the child's
    # time must still count once the shell has reaped it (as Postgres' postmaster
    # reaps a closed connection's backend).
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{BUSY}"; sleep 30'])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The sleep is the shell's only child once the Python child has exited.
            children = process_tree(shell.pid) - {shell.pid}
            names = {_comm(pid) for pid in children}
            if names == {"sleep"}:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the busy child did not finish")
        assert process_tree_cpu(shell.pid) >= 0.4
    finally:
        shell.kill()
        shell.wait()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def test_sigterm_unwinds_the_bench_so_its_clean_up_runs(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    script = textwrap.dedent(
        """
        import asyncio, os, signal, sys
        import uvloop
        from bench.env import stop_like_ctrl_c

        async def run():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                await asyncio.sleep(30)
            finally:
                await asyncio.to_thread(open(sys.argv[1], "w").write, "stopped")

        stop_like_ctrl_c()
        try:
            uvloop.run(run())
        except KeyboardInterrupt:
            sys.exit(130)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(marker)], cwd=REPO, timeout=20, check=False
    )
    assert done.returncode == 130
    assert marker.read_text() == "stopped"


def test_a_server_launched_behind_the_bench_runs_at_the_added_niceness(tmp_path: Path) -> None:
    port = free_port()
    args = ["http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)]
    server = launch("niced", args, os.environ, port, tmp_path, ready_path="/", nice=3)
    try:
        assert os.getpriority(os.PRIO_PROCESS, server.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 3
    finally:
        server.stop()
