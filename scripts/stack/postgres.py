"""The stack's own PostgreSQL cluster: created on first start, stopped with pg_ctl."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Final

from .base import StackBase
from .processes import Component, _signal_group, _tail
from .settings import StackError

# The shipped cluster's settings that shape how batches of votes are written.
CLUSTER_SETTINGS: Final = (
    "max_locks_per_transaction=1024",
    "shared_buffers=1GB",
    "work_mem=8MB",
    "max_wal_size=8GB",
)


class PostgresMixin(StackBase):
    """The cluster under `<run dir>/pg`, run as the postgres user when the runner is root."""

    db_name: str
    db_user: str
    _pg_bin: Path | None

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
            # As the shipped cluster (deploy/k8s/base/postgres/cluster.yaml) has them, so
            # the benchmarks' batches checkpoint and cache as they would there.
            *CLUSTER_SETTINGS,
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
        # Asked first, so a restart on kept data does not put a failed CREATE DATABASE
        # (an ERROR line) in the server's log.
        psql = [self._pg("psql"), *self._pg_connect(), "-d", "postgres", "-tAX"]
        exists = subprocess.run(
            [*psql, "-v", "ON_ERROR_STOP=1", "-v", f"name={self.db_name}"],
            input="SELECT 1 FROM pg_database WHERE datname = :'name';\n",
            capture_output=True,
            text=True,
            check=False,
        )
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
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
