"""A Queue's depth in its status: patched on change at most once per interval, and the last
change is written when the interval is over even if nothing more is reported."""

from __future__ import annotations

import asyncio

import pytest

from kflow.api.ids import QueueId
from kflow.kube import status as status_module
from kflow.kube.metrics import Metrics
from kflow.kube.status import QueueStatus
from tests.unit.test_kube_queue_valid import Recorder

INTERVAL = 0.05


@pytest.fixture(autouse=True)
def short_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "QUEUE_STATUS_MIN_INTERVAL_SECONDS", INTERVAL)


def waiting(api: Recorder) -> list[int]:
    return [p["waiting"] for p in api.patches]


async def test_a_change_that_comes_too_soon_is_written_once_the_interval_is_over() -> None:
    api = Recorder()
    status = QueueStatus(api, Metrics())
    queue = QueueId("etl", "q")
    await status.report(queue, 2, 0, 0)
    await status.report(queue, 1, 1, 0)  # too soon: held
    await status.report(queue, 0, 0, 0)  # too soon: replaces what was held
    assert waiting(api) == [2]
    await asyncio.sleep(INTERVAL * 4)  # and then the queue stays quiet: no report comes
    assert waiting(api) == [2, 0]  # the queue's real depth, not a stale "waiting 2"
    assert api.patches[-1] == {"at": "etl/q", "waiting": 0, "active": 0, "delayed": 0}


async def test_a_held_change_that_went_back_is_not_written_and_forget_drops_it() -> None:
    api = Recorder()
    status = QueueStatus(api, Metrics())
    queue = QueueId("etl", "q")
    await status.report(queue, 2, 0, 0)
    await status.report(queue, 3, 0, 0)
    await status.report(queue, 2, 0, 0)  # back to what is written: nothing to write
    await asyncio.sleep(INTERVAL * 4)
    assert waiting(api) == [2]

    await status.report(queue, 5, 0, 0)  # the interval is over: written at once
    await status.report(queue, 6, 0, 0)
    status.forget(queue)  # the Queue is gone: its held depth is never written
    await asyncio.sleep(INTERVAL * 4)
    assert waiting(api) == [2, 5]
