"""What a batch's offsets are: where its replay starts and what committing it stores."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from shared.consuming import offset_range
from tests.support.kafka import consumed


def _record(
    partition: int, offset: int, topic: str = "votes.accepted"
) -> ConsumerRecord[bytes, bytes]:
    return consumed(topic=topic, partition=partition, offset=offset)


def tp(partition: int, topic: str = "votes.accepted") -> TopicPartition:
    return TopicPartition(topic, partition)


def test_each_partition_starts_at_its_first_record_and_commits_past_its_last() -> None:
    records = [_record(0, o) for o in range(5, 9)] + [_record(3, 40)] + [_record(1, 7)]
    starts, ends = offset_range(records)
    assert starts == {tp(0): 5, tp(3): 40, tp(1): 7}
    assert ends == {tp(0): 9, tp(3): 41, tp(1): 8}


def test_a_partition_seen_in_two_runs_spans_both() -> None:
    records = [_record(0, 5), _record(1, 3), _record(0, 6), _record(0, 7)]
    starts, ends = offset_range(records)
    assert starts == {tp(0): 5, tp(1): 3}
    assert ends == {tp(0): 8, tp(1): 4}


def test_topics_are_told_apart() -> None:
    records = [_record(0, 1, "a"), _record(0, 9, "b")]
    starts, ends = offset_range(records)
    assert starts == {tp(0, "a"): 1, tp(0, "b"): 9}
    assert ends == {tp(0, "a"): 2, tp(0, "b"): 10}
