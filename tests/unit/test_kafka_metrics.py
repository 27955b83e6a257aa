"""The broker's Prometheus figures for a batch match FastStream's own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka.prometheus.provider import (
    BatchKafkaMetricsSettingsProvider,
    KafkaMetricsSettingsProvider,
)

from shared.kafka import _metrics_settings
from tests.support.kafka import consumed


def _record(offset: int, value: bytes) -> ConsumerRecord[Any, Any]:
    return consumed(value, partition=offset % 2, offset=offset)


def test_a_batch_is_measured_as_faststream_measures_it() -> None:
    records = tuple(_record(i, b"x" * (i * 7 % 50)) for i in range(30))
    msg: Any = SimpleNamespace(raw_message=records, body=[r.value for r in records])
    ours = _metrics_settings(records)
    assert not isinstance(ours, KafkaMetricsSettingsProvider)
    expected = BatchKafkaMetricsSettingsProvider().get_consume_attrs_from_message(msg)
    assert ours.get_consume_attrs_from_message(msg) == expected
    assert expected["message_size"] == sum(i * 7 % 50 for i in range(30))


def test_a_single_record_keeps_faststreams_provider() -> None:
    assert isinstance(_metrics_settings(_record(0, b"{}")), KafkaMetricsSettingsProvider)
