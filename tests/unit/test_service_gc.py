"""The collector settings every service runs with, and that they are undone after."""

from __future__ import annotations

import gc

from shared.service import GC_THRESHOLDS, tuned_gc


def test_services_run_with_rarer_collections_and_the_start_frozen() -> None:
    before = gc.get_threshold()
    with tuned_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_is_still_collected_under_the_settings() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self

    with tuned_gc():
        collected_before = sum(s["collected"] for s in gc.get_stats())
        for _ in range(10):
            Node()
        gc.collect()
        assert sum(s["collected"] for s in gc.get_stats()) >= collected_before + 10
