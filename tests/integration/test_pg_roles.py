"""The services' pools against the real PostgreSQL, as Kubernetes runs them: one login role
per service behind a transaction pooler, which refuses startup parameters it does not
know. With `settings_on_role` the session settings reach every connection as the role's
defaults, and nothing but what PgBouncer accepts is sent at connection start."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.antifraud import store as antifraud_store
from shared.pg import connect_and_migrate, session_settings

pytestmark = pytest.mark.integration

# What PgBouncer tracks without configuration (track_extra_parameters adds only
# parameters the server reports, which the planner settings are not).
POOLER_ACCEPTS = {
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "standard_conforming_strings",
}
SERVICES = Path(__file__).resolve().parents[2] / "services"


def as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@pytest.fixture
async def service_role(database_url: str) -> AsyncIterator[str]:
    """A login role owning a schema of its name, as the Kubernetes cluster creates them."""
    role = f"svc_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
        yield role
    finally:
        await admin.execute(f"DROP SCHEMA {role} CASCADE")
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def sent_at_start(conn: asyncpg.pool.PoolConnectionProxy) -> set[str]:
    rows = await conn.fetch("SELECT lower(name) AS name FROM pg_settings WHERE source = 'client'")
    return {row["name"] for row in rows}


async def current(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> dict[str, str]:
    rows = await conn.fetch("SELECT name, setting FROM pg_settings")
    return {row["name"]: row["setting"] for row in rows}


@pytest.mark.parametrize(
    ("service", "planner"),
    [("antifraud", antifraud_store.PLANNER), ("tally", None)],
)
async def test_settings_on_role_reach_every_connection_without_startup_parameters(
    database_url: str, service_role: str, service: str, planner: dict[str, str] | None
) -> None:
    dsn = as_user(database_url, service_role)
    pool = await connect_and_migrate(
        dsn,
        service_role,
        SERVICES / service / "migrations",
        max_size=2,
        planner=planner,
        settings_on_role=True,
    )
    wanted = session_settings(service_role, planner)
    try:
        async with pool.acquire() as conn:
            assert await sent_at_start(conn) <= POOLER_ACCEPTS
            assert wanted.items() <= (await current(conn)).items()
            # Unqualified names resolve in the service's schema: the migrations' tables.
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await pool.close()
    # A bare connection, as a pooler's server connection starts: the role's defaults.
    bare = await asyncpg.connect(dsn)
    try:
        assert wanted.items() <= (await current(bare)).items()
    finally:
        await bare.close()


async def test_without_settings_on_role_they_are_startup_parameters(
    database_url: str, service_role: str
) -> None:
    """The local stack's way: the pool sends them, and the role keeps no defaults."""
    dsn = as_user(database_url, service_role)
    pool = await connect_and_migrate(dsn, service_role, SERVICES / "tally" / "migrations")
    try:
        async with pool.acquire() as conn:
            assert {"search_path", "plan_cache_mode"} <= await sent_at_start(conn)
    finally:
        await pool.close()
    bare = await asyncpg.connect(dsn)
    try:
        assert (await current(bare))["plan_cache_mode"] == "auto"
    finally:
        await bare.close()
