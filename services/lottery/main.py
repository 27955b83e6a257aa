"""Wiring of the lottery service: settings, keyring, broker, pool and the HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import Field, SecretStr
from starlette.applications import Starlette

from services.lottery import consumer, store
from services.lottery.handlers import Lottery
from services.lottery.http import routes
from services.lottery.pii import parse_keyring
from services.lottery.staff import StaffDesk
from shared.auth import StaffTokens, VoterTokens
from shared.catalog import load_catalog
from shared.drain import PipelineProbe
from shared.errors import ServiceUnavailable
from shared.events import TOPIC_ACCEPTED, TOPIC_DEADLETTER, TOPIC_SUBMITTED
from shared.http import Health, build_app
from shared.kafka import client_options, make_broker, make_producer, wait_for_topics
from shared.pg import connect_and_migrate
from shared.service import consuming, run_service
from shared.settings import DatabaseSettings

SERVICE = "lottery"
MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


class LotterySettings(DatabaseSettings):
    lottery_port: int = Field(default=8084, ge=1, le=65535)
    pii_key: SecretStr
    pii_previous_keys: SecretStr = SecretStr("")
    voter_token_secret: SecretStr = Field(min_length=32)
    voter_token_public_key: str = ""
    staff_tokens: str = ""
    lottery_refresh_seconds: float = Field(default=15.0, gt=0, le=3600)


@dataclass(frozen=True)
class Topology:
    """The names the service uses on the shared broker and database.

    The draw waits for both hops a vote takes to reach this service's tables: antifraud
    deciding `votes.submitted`, and this group recording `votes.accepted`. Tests give
    every name a unique value so they never meet a running stack's data.
    """

    schema: str = store.SCHEMA
    group: str = consumer.GROUP
    accepted_topic: str = TOPIC_ACCEPTED
    submitted_topic: str = TOPIC_SUBMITTED
    deadletter_topic: str = TOPIC_DEADLETTER
    decider_group: str = "antifraud"

    def drain_pairs(self) -> list[tuple[str, str]]:
        return [(self.decider_group, self.submitted_topic), (self.group, self.accepted_topic)]


def now() -> datetime:
    return datetime.now(UTC)


async def keep_fresh(lottery: Lottery, interval: float) -> None:
    """Fix the seed of each poll as it opens; keep the entries and draw-readiness gauges
    current."""
    while True:
        await asyncio.sleep(interval)
        try:
            await lottery.fix_due_commitments()
            await lottery.refresh_entry_gauge()
            await lottery.refresh_draw_readiness()
        except Exception:
            log.exception("refreshing commitments and gauges failed; retrying")


def create_app(
    settings: LotterySettings,
    *,
    clock: Callable[[], datetime] = now,
    topology: Topology = Topology(),
) -> Starlette:
    catalog = load_catalog(settings.polls_file)
    cipher = parse_keyring(
        settings.pii_key.get_secret_value(), settings.pii_previous_keys.get_secret_value()
    )
    tokens = VoterTokens(
        settings.voter_token_secret.get_secret_value(), settings.voter_token_public_key
    )
    staff = StaffTokens(settings.staff_tokens)
    # Entries and the draw's records need only Postgres; without Kafka the consumer
    # waits, and a draw is refused as not drained.
    health = Health(SERVICE, ["kafka", "postgres"], needed=["postgres"])
    broker = make_broker(settings, client_id=SERVICE)
    producer = make_producer(settings, client_id=SERVICE)
    probe = PipelineProbe(client_options(settings))

    async def pipeline_left(closed_at: datetime) -> dict[str, int]:
        decider, recorder = topology.drain_pairs()
        try:
            return await probe.left_through(closed_at, decider, recorder)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise ServiceUnavailable(
                "cannot read the pipeline's progress from Kafka; retry", code="broker_unavailable"
            ) from exc

    lottery = Lottery(catalog, cipher, clock, pipeline_left)
    desk = StaffDesk(lottery, staff)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await wait_for_topics(settings)
        pool = await connect_and_migrate(
            settings.database_url.get_secret_value(),
            topology.schema,
            MIGRATIONS,
            max_size=settings.db_pool_max,
            reset_session=store.POOL_RESETS_SESSION,
            settings_on_role=settings.db_settings_on_role,
        )
        lottery.bind(pool)
        await lottery.fix_due_commitments()
        await lottery.refresh_entry_gauge()
        subscriber = consumer.attach(
            broker,
            pool,
            catalog,
            topic=topology.accepted_topic,
            group=topology.group,
            deadletter_topic=topology.deadletter_topic,
            producer=producer,
        )
        async with consuming(
            health,
            broker,
            subscriber,
            topology.group,
            pool,
            producer,
            probe=probe,
            tasks={"refresh": lambda: keep_fresh(lottery, settings.lottery_refresh_seconds)},
        ):
            yield

    return build_app(
        SERVICE,
        settings.build_version,
        [*routes(lottery, tokens), *desk.routes()],
        health,
        lifespan,
        # As much as the gateway lets through: 1,000 characters of external entropy can
        # take 12 bytes each once JSON-escaped, and must never be refused for size alone.
        body_limit=16 * 1024,
    )


def main() -> None:
    run_service(LotterySettings, create_app, service=SERVICE, port=lambda s: s.lottery_port)


if __name__ == "__main__":
    main()
