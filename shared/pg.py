"""PostgreSQL plumbing: one asyncpg pool per service, bound to the service's own schema,
and versioned SQL migrations applied at start.

Migrations are files `NNNN_name.sql` in the service's `migrations/` folder. They run in
one transaction under an advisory lock keyed by the schema, and each applied version is
recorded, so re-running is a no-op and two replicas starting at once apply them once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SETTING = re.compile(r"^[a-z_]+$")


def _check_schema(schema: str) -> str:
    if not _SCHEMA.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


def migration_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if _MIGRATION.match(p.name))
    versions = [p.name[:4] for p in files]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{folder}: two migrations share a version number")
    return files


async def migrate(conn: asyncpg.Connection, schema: str, folder: Path) -> list[str]:
    """Apply the pending migrations of `folder` to `schema`; return the versions applied."""
    schema = _check_schema(schema)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        # Created only when missing: where the schema was made for the service's role
        # (Kubernetes), the role may not create schemas, and CREATE SCHEMA IF NOT EXISTS
        # asks for that privilege even when the schema is there.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]
            for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")  # noqa: S608 (schema matched _SCHEMA)
        }
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        for path in migration_files(folder):
            version = path.name[:4]
            if version in done:
                continue
            await conn.execute(path.read_text(encoding="utf-8"))
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",  # noqa: S608
                version,
                path.name,
            )
            applied.append(version)
    if applied:
        log.info("schema %s: applied migrations %s", schema, applied)
    return applied


def session_settings(schema: str, planner: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings every session of a service's pool runs with."""
    return {
        "search_path": _check_schema(schema),
        # Each execution is planned for the tables as they are now. asyncpg prepares
        # every statement, and after five runs Postgres may switch to a generic plan
        # chosen while the tables were still nearly empty, kept until the next
        # autoanalyze replaces it. The price is planning every execution; antifraud
        # avoids both (store.PLANNER).
        "plan_cache_mode": "force_custom_plan",
        **(planner or {}),
    }


async def store_on_role(conn: asyncpg.Connection, settings: Mapping[str, str]) -> None:
    """Make `settings` the defaults of every later session of the connected login role.

    A transaction pooler (PgBouncer, as in Kubernetes) refuses startup parameters it does
    not know and cannot carry session SETs across transactions, but every server
    connection it opens for the role starts with the role's defaults. Needs one login
    role per service, as there.
    """
    for name, value in settings.items():
        if not _SETTING.match(name):
            raise ValueError(f"invalid setting name {name!r}")
        literal = "'" + value.replace("'", "''") + "'"
        await conn.execute(f"ALTER ROLE CURRENT_USER SET {name} = {literal}")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: asyncpg has already rolled back any open transaction."""


async def create_pool(
    dsn: str,
    schema: str,
    *,
    max_size: int = 10,
    reset_session: bool = True,
    init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None,
    planner: Mapping[str, str] | None = None,
    settings_on_role: bool = False,
) -> asyncpg.Pool:
    """A pool bound to `schema`, its sessions run with `session_settings`.

    With `reset_session=False` a released connection is not sent asyncpg's reset statement
    (unlock advisory locks, close cursors, unlisten, RESET ALL): one round trip and one
    statement fewer per use. Only for pools whose users keep no session state (no SET,
    LISTEN, session advisory locks or open cursors); an open transaction is still rolled
    back on release either way.

    `planner` overrides the planner settings for a pool whose queries are all of one kind
    (see antifraud's store). With `settings_on_role` the settings are not sent when a
    connection starts: `store_on_role` made them the role's defaults.
    """
    settings = {} if settings_on_role else session_settings(schema, planner)
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        command_timeout=30,
        server_settings={"application_name": _check_schema(schema), **settings},
        reset=None if reset_session else _keep_session,
        init=init,
    )
    if pool is None:
        raise RuntimeError("asyncpg returned no pool")
    return pool


async def connect_and_migrate(
    dsn: str,
    schema: str,
    folder: Path,
    *,
    max_size: int = 10,
    attempts: int = 60,
    reset_session: bool = True,
    planner: Mapping[str, str] | None = None,
    settings_on_role: bool = False,
) -> asyncpg.Pool:
    """Wait for the database (it may still be starting), migrate, then open the pool."""
    for attempt in range(attempts):
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            break
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("postgres not reachable yet (%s); retrying", exc)
            await asyncio.sleep(1)
    try:
        await migrate(conn, schema, folder)
        if settings_on_role:
            await store_on_role(conn, session_settings(schema, planner))
    finally:
        await conn.close()
    return await create_pool(
        dsn,
        schema,
        max_size=max_size,
        reset_session=reset_session,
        planner=planner,
        settings_on_role=settings_on_role,
    )
