"""Wiring of the ingest edge: settings, broker, captcha pool, pages and the HTTP app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, SecretStr
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from services.vote_ingest.http import Edge
from shared.auth import VoterTokens
from shared.captcha import CaptchaPool
from shared.catalog import CLOSE_GRACE, Catalog, load_catalog
from shared.events import TOPIC_SUBMITTED, VoteSubmitted
from shared.http import Health, build_app
from shared.kafka import client_options, wait_for_topics
from shared.netaddr import Network, parse_networks
from shared.producer import ReliableProducer
from shared.service import Part, background, run_service, stopping, watch_dependencies
from shared.settings import ServiceSettings

SERVICE = "vote_ingest"


class IngestSettings(ServiceSettings):
    vote_ingest_port: int = Field(default=8081, ge=1, le=65535)
    captcha_secret: SecretStr = Field(min_length=32)
    voter_token_secret: SecretStr = Field(min_length=32)
    voter_token_public_key: str = ""
    trusted_proxies: str = "127.0.0.1/32,::1/128"
    # Below the close's grace: results turn final and the draw runs once every vote
    # received before the close is in Kafka or was refused (shared.catalog.CLOSE_GRACE).
    publish_timeout_seconds: float = Field(default=1.5, gt=0, lt=CLOSE_GRACE.total_seconds())


def now() -> datetime:
    return datetime.now(UTC)


def edge_producer(options: dict[str, Any], publish_timeout: float) -> ReliableProducer:
    """The producer votes are published with (the ingest benchmark measures its sends)."""
    # A publish that cannot reach the broker fails inside the request timeout, so the
    # voter gets a 503 (and the record is dropped by the producer) rather than a 202
    # for a vote that might never be stored.
    request_timeout_ms = int(publish_timeout * 750)
    # Each vote is its own send; lingering 10 ms lets a busy edge put more of them in one
    # produce request (fewer requests, far less work per vote), at little latency cost
    # next to the broker's acks=all round trip.
    return ReliableProducer(
        options, client_id=SERVICE, request_timeout_ms=request_timeout_ms, linger_ms=10
    )


def page_routes(catalog: Catalog, trusted: tuple[Network, ...]) -> list[BaseRoute]:
    from services.vote_ingest.pages import page_routes as build

    return build(catalog, clock=now, trusted=trusted)


def create_app(settings: IngestSettings) -> Starlette:
    catalog = load_catalog(settings.polls_file)
    tokens = VoterTokens(
        settings.voter_token_secret.get_secret_value(), settings.voter_token_public_key
    )
    # Without Kafka the edge still serves the pages, captchas and sessions and answers
    # each vote 503 broker_unavailable, which the page tells the voter to retry: taking
    # every replica out of the load balancer would replace all of it with the
    # gateway's own error page.
    health = Health(SERVICE, ["kafka"], needed=[])
    producer = edge_producer(client_options(settings), settings.publish_timeout_seconds)
    captchas = CaptchaPool(settings.captcha_secret.get_secret_value())

    async def publish(event: VoteSubmitted) -> None:
        await producer.send(
            TOPIC_SUBMITTED, event.model_dump_json().encode(), event.voter_id.encode()
        )

    trusted = parse_networks(settings.trusted_proxies)
    edge = Edge(
        catalog,
        tokens,
        trusted,
        publish,
        captchas.take,
        now,
        speak_captcha=captchas.speak,
        publish_timeout=settings.publish_timeout_seconds,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await wait_for_topics(settings)

        await captchas.start()
        await producer.start()
        async with (
            stopping(Part("the producer", producer.stop), Part("the captcha pool", captchas.stop)),
            background(watch_dependencies(health, {"kafka": producer.ping}), "health"),
        ):
            yield

    return build_app(
        SERVICE,
        settings.build_version,
        [*edge.routes(), *page_routes(catalog, trusted)],
        health,
        lifespan,
    )


def main() -> None:
    run_service(IngestSettings, create_app, service=SERVICE, port=lambda s: s.vote_ingest_port)


if __name__ == "__main__":
    main()
