"""The Job handlers receive: sync accessors, and progress/log writes from loops and threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from kflow.sdk import Job, JobFlow


class RecordingSink:
    """Keeps what a job writes, in arrival order; `delay` makes each write take a while."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.delay = delay
        self.fail = fail

    async def update_progress(self, flow_uid: str, node: str, token: str, progress: Any) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("redis went away")
        self.writes.append(("progress", progress))

    async def log(self, flow_uid: str, node: str, token: str, message: str) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("redis went away")
        self.writes.append(("log", message))


def make_job(sink: Any = None, **overrides: Any) -> Job:
    fields: dict[str, Any] = dict(
        flow=JobFlow(uid="u-1", namespace="shop", name="order-a17"),
        name="process-payment", queue="payment", attempt=2, token="t-9",
        data={"orderId": "A-17"},
        children_values={"validate-order": {"valid": True}},
        ignored_failures={"validate-items": "ValueError: bad quantity"},
        sink=sink,
    )
    fields.update(overrides)
    return Job(**fields)


def test_accessors_expose_the_attempt_and_inputs() -> None:
    job = make_job()
    assert job.data == {"orderId": "A-17"}
    assert (job.name, job.queue, job.attempt, job.token) == ("process-payment", "payment", 2, "t-9")
    assert job.flow == JobFlow(uid="u-1", namespace="shop", name="order-a17")
    assert job.children_values() == {"validate-order": {"valid": True}}
    assert job.ignored_failures() == {"validate-items": "ValueError: bad quantity"}


def test_inputs_are_copies_a_handler_cannot_corrupt() -> None:
    job = make_job()
    job.children_values()["intruder"] = 1
    job.ignored_failures().clear()
    assert job.children_values() == {"validate-order": {"valid": True}}
    assert job.ignored_failures() == {"validate-items": "ValueError: bad quantity"}


def test_progress_and_log_without_a_sink_are_harmless() -> None:
    job = make_job()
    job.update_progress(10)
    job.log("no sink here")


async def test_async_handler_writes_arrive_in_call_order() -> None:
    sink = RecordingSink(delay=0.001)
    job = make_job(sink)
    for i in range(5):
        job.log(f"line {i}")
    await job.flush()
    assert sink.writes == [("log", f"line {i}") for i in range(5)]


async def test_progress_burst_is_coalesced_and_ends_on_the_last_value() -> None:
    sink = RecordingSink(delay=0.005)
    job = make_job(sink)
    for i in range(1, 101):
        job.update_progress(i)
    await job.flush()
    progress = [value for kind, value in sink.writes if kind == "progress"]
    assert progress[-1] == 100
    assert len(progress) < 100  # one write in flight absorbs the burst
    assert progress == sorted(progress)


async def test_sync_handler_in_a_thread_reports_through_the_loop() -> None:
    sink = RecordingSink(delay=0.001)
    job = make_job(sink)
    threads: list[str] = []

    def handler(j: Job) -> str:
        threads.append(threading.current_thread().name)
        for i in range(3):
            j.log(f"from thread {i}")
        j.update_progress(50)
        j.update_progress(100)
        return "done"

    assert await asyncio.to_thread(handler, job) == "done"
    await job.flush()
    assert threads and threads[0] != threading.main_thread().name
    logs = [value for kind, value in sink.writes if kind == "log"]
    assert logs == ["from thread 0", "from thread 1", "from thread 2"]
    assert [value for kind, value in sink.writes if kind == "progress"][-1] == 100


async def test_writes_after_close_are_dropped() -> None:
    sink = RecordingSink()
    job = make_job(sink)
    job.log("before")
    await job.close()
    job.log("after")
    job.update_progress(99)
    await asyncio.sleep(0.01)
    assert sink.writes == [("log", "before")]


async def test_a_failing_sink_never_fails_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    job = make_job(RecordingSink(fail=True))
    job.update_progress(1)
    job.log("lost")
    await job.flush()
    assert "could not record progress/log" in caplog.text


class FakeAttempt:
    flow_uid, namespace, flow_name = "u-2", "etl", "nightly"
    node, queue, attempt, token = "load", "pipeline-load", 1, "tok"
    data = {"n": 1}
    timeout_ms = 5000


class InputsOnly(RecordingSink):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def inputs_many(self, flow_uid: str, nodes: list[str]
                          ) -> list[tuple[dict[str, Any], dict[str, str], dict[str, str]]]:
        self.reads += 1
        return [({"transform": {"count": 3}}, {}, {"cont": "card declined"}) for _ in nodes]


async def test_for_attempt_fetches_inputs_before_the_handler_runs() -> None:
    engine = InputsOnly()
    job = await Job.for_attempt(engine, FakeAttempt())
    assert engine.reads == 1  # values, ignored and failed children in one read
    assert job.children_values() == {"transform": {"count": 3}}
    assert job.failed_children() == {"cont": "card declined"}
    assert (job.flow.uid, job.flow.namespace, job.flow.name) == ("u-2", "etl", "nightly")
    assert (job.timeout_ms, job.data) == (5000, {"n": 1})


async def test_for_attempt_skips_reads_for_a_leaf() -> None:
    engine = InputsOnly()
    job = await Job.for_attempt(engine, FakeAttempt(), has_children=False)
    assert engine.reads == 0
    assert job.children_values() == {}
