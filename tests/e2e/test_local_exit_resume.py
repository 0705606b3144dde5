"""`kflow run --local` run again after the runner died between the flow's end and the start of
its exit handlers: the rerun starts them (once) and runs them, and exits with the flow's code."""

from __future__ import annotations

import io
import uuid

import pytest

from kflow.api import FlowId, QueueId
from kflow.cli.local.command import execute_local_run, prepare_local_run
from kflow.engine import Engine, FlowRef
from kflow.store.connect import connect
from tests.e2e.local_support import EXAMPLES, HANDLERS, CallLog, recorded

pytestmark = pytest.mark.redis


async def test_a_rerun_starts_the_exit_handlers_a_crash_left_unstarted(redis_srv) -> None:
    run = prepare_local_run(EXAMPLES / "on-exit.yaml", HANDLERS,
                            flow_id=f"test-{uuid.uuid4().hex}")
    redis = await connect(redis_srv.url)
    try:
        engine = Engine(redis)
        flow_id = FlowId(run.namespace, run.flow_uid)
        assert await engine.submit(FlowRef(run.flow_uid, run.namespace, run.name), run.compiled)
        [attempt] = await engine.take(QueueId(run.namespace, "backup"), 10, owner="doomed")
        # The failing node's flow step ends the flow; the runner dies before its queue step.
        step = await engine.store.fail(flow_id, attempt.node, attempt.token, "disk full",
                                       infrastructure=False, infra_retries=0, jitter_share=0.0)
        assert step.phase == "Failed" and await engine.exit_snapshot(flow_id) is None
    finally:
        await redis.aclose()

    log = CallLog()
    run.handlers = recorded(run.handlers, log)
    out = io.StringIO()
    code = await execute_local_run(run, redis_srv.url, quiet=True, stream=out, redraw=False)

    assert code == 1  # the flow failed; its exit handlers' success does not change that
    assert [c.node for c in log.calls] == ["release-lock", "report"]
    assert log.of("report")[0].data["flow"]["failures"] == [
        {"node": "dump-database", "error": "disk full", "attempt": 1}]
    assert "On exit of Flow default/nightly-backup: Succeeded 2/2" in out.getvalue()
