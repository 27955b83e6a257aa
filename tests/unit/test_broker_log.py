"""The broker's log keeps what operators need and drops FastStream's start-up notice."""

from __future__ import annotations

import logging

import pytest

from shared.kafka import make_broker
from shared.settings import ServiceSettings


def test_the_topic_creation_notice_is_dropped_and_other_warnings_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_broker(ServiceSettings(), client_id="unit-broker-log")
    logger = logging.getLogger("unit-broker-log.broker")

    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Auto create topics is disabled. Make sure the topics exist.")
        logger.warning("Heartbeat failed: the group is rebalancing")

    assert [r.getMessage() for r in caplog.records] == [
        "Heartbeat failed: the group is rebalancing"
    ]
