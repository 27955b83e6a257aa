"""Kafka plumbing: the broker the consumers subscribe with, the producer every service
publishes with (shared/producer.py: acks=all, idempotent), topics created at start,
consumer lag, and the dead-letter record.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus.provider import (
    BatchKafkaMetricsSettingsProvider,
    KafkaMetricsSettingsProvider,
)
from faststream.message import StreamMessage
from faststream.prometheus import ConsumeAttrs, PrometheusMiddleware
from faststream.security import BaseSecurity, SASLScram256, SASLScram512
from prometheus_client import REGISTRY, Gauge

from shared.events import ALL_TOPICS, VoteDeadLettered
from shared.producer import ReliableProducer
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# Vote topics are the system of record for a campaign: keep every record until the
# operator deletes the topic (counts can be rebuilt from them, contract section 7).
TOPIC_CONFIG: dict[str, str] = {"retention.ms": "-1", "cleanup.policy": "delete"}

CONSUMER_LAG = Gauge(
    "kafka_consumer_lag_messages",
    "Records in a partition the consumer group has not yet committed (log end - committed)",
    ["group", "topic", "partition"],
)


def client_options(settings: ServiceSettings) -> dict[str, Any]:
    """Connection options for plain aiokafka clients (admin, offset probes)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {"bootstrap_servers": settings.kafka_bootstrap_servers}
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        "ssl_context": create_ssl_context(cafile=settings.kafka_ssl_cafile),
    }


def _security(settings: ServiceSettings) -> BaseSecurity | None:
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    scram = SASLScram512 if settings.kafka_sasl_mechanism == "SCRAM-SHA-512" else SASLScram256
    return scram(
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=create_ssl_context(cafile=settings.kafka_ssl_cafile),
    )


def make_producer(
    settings: ServiceSettings, *, client_id: str, request_timeout_ms: int = 5_000
) -> ReliableProducer:
    return ReliableProducer(
        client_options(settings), client_id=client_id, request_timeout_ms=request_timeout_ms
    )


class _BatchMetrics(BatchKafkaMetricsSettingsProvider):
    """FastStream's figures for a batch, with its size summed: FastStream measures it by
    joining every record into one new buffer, a copy of the whole batch that cost a
    catch-up about a twentieth of its CPU."""

    __slots__ = ()

    def get_consume_attrs_from_message(
        self, msg: StreamMessage[tuple[ConsumerRecord[Any, Any], ...]]
    ) -> ConsumeAttrs:
        return {
            "destination_name": msg.raw_message[0].topic,
            "message_size": sum(map(len, msg.body)),
            "messages_count": len(msg.raw_message),
        }


def _metrics_settings(
    msg: ConsumerRecord[Any, Any] | Sequence[ConsumerRecord[Any, Any]] | None,
) -> KafkaMetricsSettingsProvider | _BatchMetrics:
    """FastStream's own choice of settings provider, with the batch one above."""
    if isinstance(msg, Sequence):
        return _BatchMetrics()
    return KafkaMetricsSettingsProvider()


class _TopicsAlreadyChecked(logging.Filter):
    """FastStream warns at every subscriber start that it will not create topics, whether
    they exist or not. Topics are created before any subscriber starts (by each service,
    `wait_for_topics`, or in Kubernetes by the operator's KafkaTopic objects), so the line
    would only teach operators to skim past warnings."""

    MESSAGE: Final = "Auto create topics is disabled. Make sure the topics exist."

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.MESSAGE


def broker_logger(client_id: str) -> logging.Logger:
    logger = logging.getLogger(f"{client_id}.broker")
    if not any(isinstance(f, _TopicsAlreadyChecked) for f in logger.filters):
        logger.addFilter(_TopicsAlreadyChecked())
    return logger


def make_broker(settings: ServiceSettings, *, client_id: str) -> KafkaBroker:
    """The FastStream broker for subscribing; records are published by make_producer's."""
    options: dict[str, Any] = {
        "client_id": client_id,
        "request_timeout_ms": 5_000,
        "retry_backoff_ms": 100,
        "allow_auto_create_topics": False,
        "graceful_timeout": 10.0,
        "logger": broker_logger(client_id),
        # Per-message "Received/Processed" lines are debug detail, not operations news.
        "log_level": logging.DEBUG,
        "security": _security(settings),
        # Broker-level figures (faststream_* received/processed/published counters and
        # durations per topic) beside the services' own metrics, on the same /metrics.
        "middlewares": (
            PrometheusMiddleware(
                settings_provider_factory=_metrics_settings,
                registry=REGISTRY,
                app_name=client_id,
            ),
        ),
    }
    return KafkaBroker(settings.kafka_bootstrap_servers, **options)


async def ensure_topics(
    bootstrap: str,
    *,
    partitions: int,
    replication: int,
    topics: Iterable[str] = ALL_TOPICS,
    options: dict[str, Any] | None = None,
) -> None:
    """Create the topics that are missing; safe to run from every replica at once."""
    connect = options or {"bootstrap_servers": bootstrap}
    admin = AIOKafkaAdminClient(**connect, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t, partitions, replication, topic_configs=TOPIC_CONFIG)
            for t in topics
            if t not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another replica won the race; the topic is there either way
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


async def wait_for_topics(settings: ServiceSettings, *, attempts: int = 60) -> None:
    """Retry topic creation while the broker is starting; give up after `attempts` s."""
    if not settings.kafka_create_topics:
        return
    for attempt in range(attempts):
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                partitions=settings.kafka_topic_partitions,
                replication=settings.kafka_replication_factor,
                options=client_options(settings),
            )
            return
        except (KafkaError, OSError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("kafka not reachable yet (%s); retrying", exc)
            await asyncio.sleep(1)


def dead_letter(record: ConsumerRecord[Any, Any], error: str, group: str) -> VoteDeadLettered:
    value = record.value if isinstance(record.value, bytes) else b""
    key = record.key if isinstance(record.key, bytes) else None
    return VoteDeadLettered(
        raw=base64.b64encode(value).decode(),
        key=base64.b64encode(key).decode() if key is not None else None,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error=error[:1000],
        consumer=group,
        failed_at=datetime.now(UTC),
    )


# The lag series this process exports, per group: removed once their partition moves to
# another replica, or they would stay frozen at their last value beside the new owner's.
_LAG_SERIES: dict[str, set[tuple[str, str]]] = {}


async def report_lag(consumer: Any, group: str) -> None:
    """Export, for every partition the consumer holds, the records its group has not yet
    committed: the log end offset minus the committed offset (the log start before any
    commit; the services read from the earliest offset). Measured against commits, not
    against what was fetched, a consumer stuck on a batch shows its lag rising.
    """
    held = {(tp.topic, str(tp.partition)): tp for tp in consumer.assignment()}
    reported = _LAG_SERIES.setdefault(group, set())
    for labels in reported - held.keys():
        CONSUMER_LAG.remove(group, *labels)
        reported.discard(labels)
    if not held:
        return
    partitions = list(held.values())
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    for labels, tp in held.items():
        committed = await consumer.committed(tp)
        done = starts[tp] if committed is None else committed
        CONSUMER_LAG.labels(group, *labels).set(max(0, ends[tp] - done))
        reported.add(labels)


async def report_lag_forever(subscriber: object, group: str, *, interval: float = 5.0) -> None:
    """`report_lag` every `interval` seconds for the subscriber's consumer, once it has one.
    A broker that does not answer leaves the last figures until it does."""
    while True:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is not None:
            try:
                async with asyncio.timeout(interval):
                    await report_lag(consumer, group)
            except (KafkaError, TimeoutError) as exc:
                log.debug("consumer lag not measured: %r", exc)
        await asyncio.sleep(interval)
