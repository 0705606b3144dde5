"""The engine processes' collector settings (kflow.engine.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from kflow.engine import tune_collector
from kflow.engine.heap import YOUNG_THRESHOLD
from kflow.sdk.worker import worker_runner

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.usefixtures("restored_collector")
def test_kflow_worker_and_the_bench_that_compares_it_with_bullmq_start_the_same_way() -> None:
    # bench/vs-bullmq ran its kflow worker without the collector settings `kflow worker`
    # has, and measured ~10 µs per node of collections the product does not pay. Both now
    # start through one function.
    gc.unfreeze()
    with worker_runner() as runner:
        assert gc.get_freeze_count() > 1_000
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert isinstance(runner.get_loop(), uvloop.Loop)  # the "fast" extra is installed
    bench = (ROOT / "bench" / "vs-bullmq" / "kflow_bench.py").read_text()
    assert "with worker_runner() as runner:" in bench
