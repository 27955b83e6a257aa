"""Wiring of the antifraud service: settings, broker, pool, consumer and decision lookup."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from pydantic import Field, SecretStr
from starlette.applications import Starlette

from services.antifraud import consumer, store
from services.antifraud.http import routes
from shared.catalog import load_catalog
from shared.http import Health, build_app
from shared.kafka import make_broker, make_producer, wait_for_topics
from shared.pg import connect_and_migrate
from shared.service import consuming, run_service
from shared.settings import DatabaseSettings

SERVICE = "antifraud"
MIGRATIONS = Path(__file__).parent / "migrations"


class AntifraudSettings(DatabaseSettings):
    antifraud_port: int = Field(default=8082, ge=1, le=65535)
    captcha_secret: SecretStr = Field(min_length=32)


def now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: AntifraudSettings) -> Starlette:
    catalog = load_catalog(settings.polls_file)
    # Vote lookups need only Postgres; without Kafka the consumer waits.
    health = Health(SERVICE, ["kafka", "postgres"], needed=["postgres"])
    broker = make_broker(settings, client_id=SERVICE)
    producer = make_producer(settings, client_id=SERVICE)
    pools: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await wait_for_topics(settings)
        pool = await connect_and_migrate(
            settings.database_url.get_secret_value(),
            store.SCHEMA,
            MIGRATIONS,
            max_size=settings.db_pool_max,
            reset_session=store.POOL_RESETS_SESSION,
            settings_on_role=settings.db_settings_on_role,
            planner=store.PLANNER,
        )
        pools["pool"] = pool
        secret = settings.captcha_secret.get_secret_value()
        subscriber = consumer.attach(broker, pool, catalog, secret, now, producer=producer)
        async with consuming(
            health,
            broker,
            subscriber,
            consumer.GROUP,
            pool,
            producer,
            tasks={"prune": lambda: store.prune_forever(pool, now)},
        ):
            yield

    return build_app(SERVICE, settings.build_version, routes(catalog, pools, now), health, lifespan)


def main() -> None:
    run_service(AntifraudSettings, create_app, service=SERVICE, port=lambda s: s.antifraud_port)


if __name__ == "__main__":
    main()
