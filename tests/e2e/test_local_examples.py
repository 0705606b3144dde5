"""Every flow in examples/ runs to the right result on a real Redis, through the local runner."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.e2e.local_support import EXAMPLES, run_flow_file

pytestmark = pytest.mark.redis


async def test_etl_chain_hands_each_stage_the_one_before(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "etl-pipeline.yaml", redis_srv.url)
    assert out.exit_code == 0 and out.snapshot.phase == "Succeeded"
    assert [c.node for c in out.log.calls] == ["extract", "transform", "load", "notify"]
    assert out.log.of("transform")[0].children_values == {"extract": out.result("extract")}
    assert out.result("transform")["records"][0] == {
        "id": 1, "customer": "Ada Lovelace", "amountCents": 1250}
    assert out.result("notify") == {"pipelineId": "pipeline-2026-11-28", "success": True,
                                    "loaded": 3, "totalCents": 4975}


async def test_map_files_runs_one_node_per_listed_file_and_merges_them_in_order(
        redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "map-files.yaml", redis_srv.url)
    assert out.snapshot.phase == "Succeeded" and out.snapshot.total == 3 + 6
    assert out.result("merge") == {"files": 6, "rows": sum(100 + i for i in range(6)),
                                   "first": "part-0000.csv"}
    assert [out.result(f"process-file[{i}]")["file"] for i in range(6)] == [
        f"part-{i:04d}.csv" for i in range(6)]
    assert out.log.max_running["file-processor"] <= 4  # Queue file-processor: concurrency 4
    assert len(out.log.calls) == 1 + 6 + 1  # the map node itself never runs


async def test_decide_at_run_time_adds_shards_skips_a_false_condition_and_reruns_a_splitter(
        redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "decide-at-run-time.yaml", redis_srv.url)
    assert out.snapshot.phase == "Succeeded"
    assert out.snapshot.counts == {"completed": 11, "skipped": 1}
    assert out.result("merge-shards") == {"shards": 4, "rows": 460}  # waited for the 4 added
    assert out.result("publish-small") == {"published": 460}
    assert "publish" not in {c.node for c in out.log.calls}  # 460 rows: its when was false
    assert out.result("split") == {"parts": 3, "rows": 330}  # its second run's value
    assert len(out.log.of("split")) == 2 and len(out.log.of("scan-shards")) == 1


async def test_fan_out_aggregate_sums_every_child_within_the_queue_limit(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "fan-out.yaml", redis_srv.url)
    assert out.snapshot.phase == "Succeeded"
    items = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    aggregate = out.result("aggregate-results")
    assert aggregate["results"] == [i * i for i in items]
    assert aggregate["sum"] == sum(i * i for i in items) == 207
    assert aggregate["successful"] == 10 and aggregate["failed"] == 0
    (parent_call,) = out.log.of("aggregate-results")
    assert len(parent_call.children_values) == 10
    assert out.log.max_running["item-processor"] <= 3  # Queue item-processor: concurrency 3
    assert len(out.log.calls) == 11


async def test_order_diamond_charges_once_and_both_parents_get_the_payment(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "order-workflow.yaml", redis_srv.url)
    assert out.exit_code == 0 and out.snapshot.phase == "Succeeded"
    payment = out.result("process-payment")
    assert payment == {"paymentId": "pay-A-17", "charged": 55.0}
    assert len(out.log.of("process-payment")) == 1
    assert out.nodes["process-payment"].attempt == 1
    for parent in ("reserve-inventory", "prepare-shipping"):
        (call,) = out.log.of(parent)
        assert call.children_values == {"process-payment": payment}
    assert out.result("send-confirmation") == {
        "orderId": "A-17", "confirmed": True, "paymentId": "pay-A-17",
        "trackingId": "trk-A-17-GB", "reserved": {"P-100": 2, "P-200": 1}}
    # Children before parents: validation, then payment, then its two parents, then the rest.
    order = [c.node for c in out.log.calls]
    assert order.index("validate-order") < order.index("process-payment")
    assert order.index("process-payment") < min(order.index("reserve-inventory"),
                                                 order.index("prepare-shipping"))
    assert order[-2:] == ["fulfill-order", "send-confirmation"]
    assert out.snapshot.counts.get("completed") == 8 == out.snapshot.total


async def test_options_retry_with_backoff_priority_and_an_optional_child(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "options.yaml", redis_srv.url)
    assert out.snapshot.phase == "Succeeded"
    # child-queue runs one at a time: the priority-0 child goes before the priority-5 one.
    assert out.log.calls[0].node == "critical-child"
    assert [c.attempt for c in out.log.of("critical-child")] == [1, 2, 3]
    assert out.result("critical-child") == {"critical": True, "attempt": 3}
    assert [c.attempt for c in out.log.of("optional-child")] == [1]  # attempts: 1
    assert out.nodes["optional-child"].state == "ignored"
    (parent,) = out.log.of("parent")
    assert set(parent.ignored_failures) == {"optional-child"}
    assert "optional-child failed" in parent.ignored_failures["optional-child"]
    assert out.result("parent")["failedChildren"] == ["optional-child"]
    assert out.result("parent")["children"] == {"critical-child": {"critical": True,
                                                                   "attempt": 3}}


async def test_error_handling_ignore_remove_and_a_flaky_critical_child(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "error-handling.yaml", redis_srv.url)
    assert out.exit_code == 0 and out.snapshot.phase == "Succeeded"
    assert [c.attempt for c in out.log.of("must-succeed")] == [1, 2, 3]
    assert [c.attempt for c in out.log.of("optional-task")] == [1, 2]
    assert [c.attempt for c in out.log.of("refresh-cache")] == [1]
    assert out.nodes["optional-task"].state == "ignored"
    assert out.nodes["refresh-cache"].state == "removed"
    (parent,) = out.log.of("resilient-parent")
    assert parent.children_values == {"must-succeed": {"ok": True, "attempts": 3}}
    assert list(parent.ignored_failures) == ["optional-task"]  # removed: not seen at all
    assert out.result("resilient-parent") == {
        "totalChildren": 2, "successful": ["must-succeed"],
        "failed": {"optional-task":
                   "RuntimeError: optional-task: the recommendations service is down"}}


async def test_fail_parent_fails_the_flow_with_the_childs_error_as_cause(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "payment-declined.yaml", redis_srv.url)
    assert out.exit_code == 1 and out.snapshot.phase == "Failed"
    assert [c.attempt for c in out.log.of("charge-card")] == [1, 2]
    assert out.log.of("send-receipt") == []  # the parent never runs
    assert out.nodes["charge-card"].state == "failed"
    parent = out.nodes["send-receipt"]
    assert parent.state == "failed"
    assert "charge-card" in (parent.error or "") and "CardDeclined" in (parent.error or "")
    assert any(f.node == "charge-card" and "declined" in f.error for f in out.snapshot.failures)
    assert "send-receipt [receipts] failed" in out.output and "CardDeclined" in out.output


def test_dynamic_flow_file_is_what_the_generator_writes() -> None:
    generated = subprocess.run(
        [sys.executable, str(EXAMPLES / "dynamic_flow.py")], check=True, capture_output=True,
        text=True).stdout
    assert list(yaml.safe_load_all(generated)) == list(
        yaml.safe_load_all((EXAMPLES / "dynamic-flow.yaml").read_text()))


async def test_dynamic_flow_runs_the_shared_chain_once_for_both_destinations(redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "dynamic-flow.yaml", redis_srv.url)
    assert out.snapshot.phase == "Succeeded"
    assert len(out.log.of("transform-enrich")) == 1  # two parents, one run
    for dest in ("load-warehouse", "load-search-index"):
        (call,) = out.log.of(dest)
        assert call.children_values == {"transform-enrich": out.result("transform-enrich")}
    assert out.result("transform-enrich") == {
        "rows": 195, "sources": ["customers", "orders", "products"],
        "steps": ["clean", "enrich"]}
    assert out.result("complete-flow") == {
        "flowId": "dynamic-etl", "destinations": ["search-index", "warehouse"],
        "rowsPerDestination": {"warehouse": 195, "search-index": 195}}


async def test_a_generated_flow_with_other_settings_runs_too(redis_srv, tmp_path) -> None:
    flow = tmp_path / "generated.yaml"
    flow.write_text(subprocess.run(
        [sys.executable, str(EXAMPLES / "dynamic_flow.py"), "--name", "refunds",
         "--sources", "orders,refunds", "--transformations", "", "--destinations", "warehouse"],
        check=True, capture_output=True, text=True).stdout)
    out = await run_flow_file(flow, redis_srv.url)
    assert out.snapshot.phase == "Succeeded"
    assert out.result("complete-flow")["rowsPerDestination"] == {"warehouse": 130}


async def test_on_exit_handlers_run_after_the_flow_fails_with_its_phase_and_failures(
        redis_srv) -> None:
    out = await run_flow_file(EXAMPLES / "on-exit.yaml", redis_srv.url)
    assert out.exit_code == 1 and out.snapshot.phase == "Failed"  # the flow's outcome, only
    assert out.log.of("upload-dump") == []
    (cleanup,) = out.log.of("release-lock")
    (report,) = out.log.of("report")
    assert report.data["channel"] == "#ops"
    flow = report.data["flow"]
    assert {k: flow[k] for k in ("name", "namespace", "phase")} == {
        "name": "nightly-backup", "namespace": "default", "phase": "Failed"}
    (failure,) = flow["failures"]
    assert failure["node"] == "dump-database" and failure["attempt"] == 1
    assert failure["error"].startswith("RuntimeError: no space left to dump orders (12 MB free)")
    assert report.children_values == {
        "release-lock": {"released": "backup-orders", "after": "Failed"}}
    assert cleanup.data["flow"]["phase"] == "Failed"
    assert "On exit of Flow default/nightly-backup: Succeeded 2/2" in out.output
