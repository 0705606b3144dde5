"""The engine processes' collector settings (kflow.engine.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kflow.engine import tune_collector
from kflow.engine.heap import YOUNG_THRESHOLD


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_tune_collector_freezes_the_start_up_heap_and_collects_young_objects_less_often() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    tune_collector()
    assert gc.get_freeze_count() > 1_000  # the imports' objects, out of the collector's sight
    assert gc.get_threshold() == (YOUNG_THRESHOLD, older, oldest)


@pytest.mark.usefixtures("restored_collector")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_collector()

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
