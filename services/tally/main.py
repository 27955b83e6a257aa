"""Wiring of the tally service: settings, broker, pool, hub and the HTTP app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field
from starlette.applications import Starlette

from services.tally import consumer, store
from services.tally.http import routes
from services.tally.hub import ResultsHub
from shared.auth import StaffTokens
from shared.catalog import load_catalog
from shared.drain import PipelineProbe
from shared.events import TOPIC_ACCEPTED, TOPIC_SUBMITTED
from shared.http import Health, build_app
from shared.kafka import client_options, make_broker, make_producer, wait_for_topics
from shared.pg import connect_and_migrate
from shared.service import consuming, run_service
from shared.settings import DatabaseSettings

SERVICE = "tally"
MIGRATIONS = Path(__file__).parent / "migrations"


class TallySettings(DatabaseSettings):
    tally_port: int = Field(default=8083, ge=1, le=65535)
    staff_tokens: str = ""
    # Live-results streams one process holds (about 26 KiB each); more are refused with
    # 503 and their pages read the results every 15 s instead.
    results_stream_max_viewers: int = Field(default=10_000, ge=1)


def now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: TallySettings) -> Starlette:
    catalog = load_catalog(settings.polls_file)
    staff = StaffTokens(settings.staff_tokens)
    # Results need only Postgres; without Kafka the consumer waits.
    health = Health(SERVICE, ["kafka", "postgres"], needed=["postgres"])
    broker = make_broker(settings, client_id=SERVICE)
    producer = make_producer(settings, client_id=SERVICE)
    probe = PipelineProbe(client_options(settings))
    state: dict[str, object] = {}

    async def read_counts() -> dict[str, dict[str, int]]:
        return await store.read_counts(state["pool"])  # type: ignore[arg-type]

    async def drained(closed_at: datetime) -> bool:
        left = await probe.left_through(
            closed_at, ("antifraud", TOPIC_SUBMITTED), (consumer.GROUP, TOPIC_ACCEPTED)
        )
        return not any(left.values())

    hub = ResultsHub(
        catalog, read_counts, drained, now, max_viewers=settings.results_stream_max_viewers
    )

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
        )
        state["pool"] = pool
        subscriber = consumer.attach(broker, pool, producer=producer)
        async with consuming(
            health,
            broker,
            subscriber,
            consumer.GROUP,
            pool,
            producer,
            probe=probe,
            tasks={"results-hub": hub.run},
        ):
            yield

    return build_app(
        SERVICE, settings.build_version, routes(catalog, hub, staff, now), health, lifespan
    )


def main() -> None:
    run_service(TallySettings, create_app, service=SERVICE, port=lambda s: s.tally_port)


if __name__ == "__main__":
    main()
