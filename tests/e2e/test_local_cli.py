"""`kflow run --local`, `kflow lint` and `kflow version` as a user runs them: a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from kflow.cli.local.command import derive_flow_uid
from kflow.cli.local.view import render_tree
from kflow.engine import NodeInfo
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions
from tests.e2e.local_support import EXAMPLES, HANDLERS, ROOT

KFLOW = ROOT / ".venv" / "bin" / "kflow"
# Invalid-input tests own this Redis database, so DBSIZE sees nothing but what they write.
CLEAN_DB = 7


def kflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if not KFLOW.exists():
        pytest.fail(f"{KFLOW} is missing: uv pip install --python .venv/bin/python -e '.[dev]'")
    return subprocess.run([str(KFLOW), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


FLOW_HEAD = """apiVersion: kflow.dev/v1alpha1
kind: Flow
metadata: {name: bad-orders, namespace: shop}
spec:
  nodes:
"""

INVALID = {
    "cycle": (
        "  - {name: a, queue: q, children: [b]}\n"
        "  - {name: b, queue: q, children: [c]}\n"
        "  - {name: c, queue: q, children: [a]}\n",
        ['"a" -> "b" -> "c" -> "a"', "cycle", "spec.nodes"],
    ),
    "unknown child": (
        "  - {name: load, queue: q, children: [transfrom]}\n"
        "  - {name: transform, queue: q}\n",
        ['node "load"', '"transfrom"', 'did you mean "transform"', "spec.nodes[0].children[0]"],
    ),
    "duplicate names": (
        "  - {name: a, queue: q, children: [{name: b, queue: q}]}\n"
        "  - {name: b, queue: q}\n",
        ['node "b"', "defined twice", "spec.nodes[0].children[0]", "spec.nodes[1]"],
    ),
    "two aliases": (
        "  - name: a\n    queue: q\n    children:\n"
        "    - {name: b, queue: q, opts: {failParentOnFailure: true,"
        " ignoreDependencyOnFailure: true}}\n",
        ['node "b"', "spec.nodes[0].children[0].opts", "failParentOnFailure",
         "ignoreDependencyOnFailure"],
    ),
    "wrong type": (
        '  - {name: a, queue: q, opts: {attempts: "three"}}\n',
        ['node "a"', "spec.nodes[0].opts.attempts", "whole number"],
    ),
    "negative attempts": (
        "  - {name: a, queue: q, opts: {attempts: -1}}\n",
        ['node "a"', "spec.nodes[0].opts.attempts", "at least 1", "-1"],
    ),
    "5 MB data": (
        "  - name: big\n    queue: q\n    data: {blob: " + json.dumps("x" * 5 * 1024 * 1024)
        + "}\n",
        ['node "big"', "spec.nodes[0].data", "5 MiB", "limit"],
    ),
}


@pytest.fixture
def clean_db(redis_srv) -> redis.Redis:
    client = redis.Redis(port=redis_srv.port, db=CLEAN_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_flow_exits_2_naming_flow_node_and_field_and_writes_nothing(
    case: str, tmp_path: Path, redis_srv, clean_db: redis.Redis
) -> None:
    body, expected = INVALID[case]
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW_HEAD + body)
    handlers = tmp_path / "handlers.py"
    handlers.write_text("HANDLERS = {'q': lambda job: 1}\n")
    before = clean_db.dbsize()
    result = kflow("run", "--local", flow, "--handlers", handlers,
                   "--redis", f"redis://127.0.0.1:{redis_srv.port}/{CLEAN_DB}")
    assert result.returncode == 2, result.stderr
    assert "Flow shop/bad-orders" in result.stderr
    for fragment in expected:
        assert fragment in result.stderr, (fragment, result.stderr[:2000])
    assert len(result.stderr) < 5000  # the 5 MB blob is not echoed back
    assert before == clean_db.dbsize() == 0


@pytest.mark.redis
def test_a_queue_without_handler_exits_2_and_writes_nothing(
    tmp_path: Path, redis_srv, clean_db: redis.Redis
) -> None:
    handlers = tmp_path / "partial.py"
    handlers.write_text("HANDLERS = {'payment': lambda job: 1}\n")
    result = kflow("run", "--local", EXAMPLES / "order-workflow.yaml", "--handlers", handlers,
                   "--redis", f"redis://127.0.0.1:{redis_srv.port}/{CLEAN_DB}")
    assert result.returncode == 2
    assert "Flow default/order-a17 uses queue(s)" in result.stderr
    assert "inventory" in result.stderr and "shipping" in result.stderr
    assert clean_db.dbsize() == 0


def test_order_workflow_on_a_private_redis_succeeds_and_prints_the_tree() -> None:
    result = kflow("run", "--local", EXAMPLES / "order-workflow.yaml", "--handlers", HANDLERS)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Flow default/order-a17: Succeeded 8/8 done (8 completed)" in out
    # How long it ran (first start to end, Redis's clock), then its result.
    assert re.search(r'process-payment \[payment\] completed in [0-9.]+s (->|→) '
                     r'\{"paymentId":"pay-A-17"', out), out
    assert "(children drawn above)" in out  # the diamond's second parent refers back
    # Not a terminal: state changes line by line, the job's log lines among them.
    assert "process-payment: completed" in out
    assert "process-payment: log: charged 55.00 to customer C-9" in out


def test_failing_flow_exits_1_with_the_failure_tree() -> None:
    result = kflow("run", "--local", EXAMPLES / "payment-declined.yaml", "--handlers", HANDLERS,
                   "--quiet")
    assert result.returncode == 1
    out = result.stdout
    assert out.startswith("Flow default/payment-declined: Failed")
    assert 'send-receipt [receipts] failed: child "charge-card" failed: CardDeclined' in out
    assert re.search(r"charge-card \[cards\] failed \(attempt 2\) in [0-9.]+s: CardDeclined",
                     out), out
    assert "failures:" in out and "examples/handlers.py" in out  # where it was raised
    assert "charge-card: active" not in out  # --quiet: the final tree only


@pytest.mark.redis
def test_rerun_on_the_same_redis_resumes_the_finished_flow_without_running_it(
    redis_srv, tmp_path: Path
) -> None:
    counter = tmp_path / "calls.txt"
    handlers = tmp_path / "counting.py"
    handlers.write_text(
        "from pathlib import Path\n"
        f"CALLS = Path({str(counter)!r})\n"
        "def work(job):\n"
        "    with CALLS.open('a') as f:\n"
        "        f.write(job.name + '\\n')\n"
        "    return len(job.children_values())\n"
        "HANDLERS = {'q': work}\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("apiVersion: kflow.dev/v1alpha1\nkind: Flow\n"
                    "metadata: {name: rerun-me, namespace: t-rerun}\n"
                    "spec:\n  nodes:\n"
                    "  - {name: top, queue: q, children: [{name: leaf, queue: q}]}\n")
    first = kflow("run", "--local", flow, "--handlers", handlers, "--redis", redis_srv.url)
    second = kflow("run", "--local", flow, "--handlers", handlers, "--redis", redis_srv.url)
    assert first.returncode == 0 == second.returncode, first.stderr + second.stderr
    uid = derive_flow_uid("t-rerun", "rerun-me")
    assert f"({uid}): submitted, 2 nodes" in first.stdout
    assert f"({uid}): resuming, 2 nodes" in second.stdout
    assert counter.read_text().split() == ["leaf", "top"]  # the second run ran nothing


@pytest.mark.redis
def test_unreachable_redis_is_a_clear_error(tmp_path: Path) -> None:
    result = kflow("run", "--local", EXAMPLES / "fan-out.yaml", "--handlers", HANDLERS,
                   "--redis", "redis://127.0.0.1:1/0")
    assert result.returncode == 3
    assert "error: Redis at redis://127.0.0.1:1/0" in result.stderr


def test_lint_accepts_the_examples_and_rejects_a_bad_file(tmp_path: Path) -> None:
    ok = kflow("lint", *sorted(EXAMPLES.glob("*.yaml")))
    assert ok.returncode == 0, ok.stderr
    assert "Flow default/order-a17: ok (8 nodes, 8 queues)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(FLOW_HEAD + INVALID["unknown child"][0])
    result = kflow("lint", EXAMPLES / "fan-out.yaml", bad)
    assert result.returncode == 1
    assert "Flow default/fan-out: ok" in result.stdout
    assert f'{bad}: Flow shop/bad-orders: node "load" lists child "transfrom"' in result.stderr
    assert "(field spec.nodes[0].children[0])" in result.stderr


def test_version_and_usage() -> None:
    version = kflow("version")
    assert version.returncode == 0 and version.stdout.startswith("kflow 0.")
    missing = kflow("run", "flow.yaml", "--handlers", "h.py")
    assert missing.returncode == 2 and "--local" in missing.stderr


def _node(name: str, queue: str, children: tuple[str, ...] = (),
          parents: tuple[str, ...] = ()) -> CompiledNode:
    return CompiledNode(name, queue, None, CompiledOptions(), children, parents)


def test_tree_draws_a_shared_child_once_and_summarises_long_child_lists() -> None:
    items = tuple(f"item-{i}" for i in range(30))
    nodes = {
        **{i: _node(i, "work", parents=("mid",)) for i in items},
        "mid": _node("mid", "merge", items, ("left", "right")),
        "left": _node("left", "side", ("mid",), ("top",)),
        "right": _node("right", "side", ("mid",), ("top",)),
        "top": _node("top", "end", ("left", "right")),
    }
    compiled = CompiledFlow(nodes=nodes, roots=("top",), leaves=items)
    infos = {i: NodeInfo("completed", 1, 1, None, None) for i in items}
    infos["item-7"] = NodeInfo("failed", 3, None, "ValueError: bad row\ntrace", None)
    lines = render_tree(compiled, infos, unicode=False)
    assert lines[0] == "? top [end] unknown"
    assert "x item-7 [work] failed (attempt 3): ValueError: bad row" in "\n".join(lines)
    assert sum("... 19 more: 19 completed" in line for line in lines) == 1
    assert lines[-1].endswith("mid [merge] unknown (children drawn above)")
    # top, left, mid, 11 shown items, the summary, right, mid again
    assert len(lines) == 1 + 1 + 1 + 11 + 1 + 1 + 1


def test_tree_of_a_very_deep_chain_draws_without_recursion() -> None:
    depth = 50_000
    names = [f"n{i}" for i in range(depth)]
    nodes = {
        name: _node(name, "q", (names[i + 1],) if i + 1 < depth else (),
                    (names[i - 1],) if i else ())
        for i, name in enumerate(names)
    }
    compiled = CompiledFlow(nodes=dict(reversed(nodes.items())), roots=("n0",),
                            leaves=(names[-1],))
    lines = render_tree(compiled, {}, unicode=False, max_lines=100)
    assert len(lines) == 101 and lines[-1] == "... (cut)"
    assert max(len(line) for line in lines) < 200


def test_terminal_view_redraws_the_tree_in_place() -> None:
    import io

    from kflow.cli.local.view import TreeView
    from kflow.engine import FlowSnapshot

    compiled = CompiledFlow(nodes={"leaf": _node("leaf", "q", parents=("top",)),
                                   "top": _node("top", "q", ("leaf",))},
                            roots=("top",), leaves=("leaf",))
    stream = io.StringIO()
    view = TreeView(compiled, "ns/flow", stream=stream, redraw=True)
    running = FlowSnapshot("Running", 2, {"active": 1, "waiting-children": 1}, 0, 1, None)
    view._redraw(view._frame(running, {"leaf": NodeInfo("active", 1, None, None, 40)}))
    first = stream.getvalue()
    assert "leaf [q] active progress 40" in first
    view._redraw(view._frame(running, {"leaf": NodeInfo("active", 1, None, None, 50)}))
    second = stream.getvalue()[len(first):]
    # Drawn again in place (Rich's Live): up over the 3 lines drawn, each erased, then the new.
    assert second.count("\x1b[1A") == 2 and second.count("\x1b[2K") == 3
    assert "progress 50" in second and "progress 40" not in second
    done = FlowSnapshot("Succeeded", 2, {"completed": 2}, 2, 1, 2)
    view.final(done, {n: NodeInfo("completed", 1, 7, None, None) for n in ("leaf", "top")})
    third = stream.getvalue()[len(first) + len(second):]
    # The live frame is taken off, and the final tree printed in full below nothing.
    printed = third[third.rindex("\x1b[2K") + len("\x1b[2K"):]
    assert printed == ("Flow ns/flow: Succeeded 2/2 done (2 completed)\n"
                       "+ top [q] completed -> 7\n`- + leaf [q] completed -> 7\n")
    assert "\x1b[?25h" in third  # the cursor is shown again


def _children_named(pid: int, comm: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and name == comm:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"  # a zombie no longer runs


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_the_private_redis_stops_with_the_runner(how: signal.Signals, tmp_path: Path) -> None:
    handlers = tmp_path / "sleepy.py"
    handlers.write_text("import time\nHANDLERS = {'q': lambda job: time.sleep(30)}\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("apiVersion: kflow.dev/v1alpha1\nkind: Flow\nmetadata: {name: sleepy}\n"
                    "spec:\n  nodes:\n  - {name: nap, queue: q}\n")
    proc = subprocess.Popen([str(KFLOW), "run", "--local", str(flow), "--handlers",
                             str(handlers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        line = proc.stdout.readline() if proc.stdout else ""  # printed once Redis is up
        assert "submitted" in line, proc.stderr.read() if proc.stderr else ""
        servers = _children_named(proc.pid, "redis-server")
        assert len(servers) == 1
        proc.send_signal(how)
        code = proc.wait(timeout=30)
        while not _gone(servers[0]):
            assert time.monotonic() < deadline, "the private redis-server outlived the runner"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == signal.SIGINT:
        assert code == 130
        assert "interrupted" in (proc.stderr.read() if proc.stderr else "")
    else:
        assert code == -signal.SIGKILL


GITOPS = EXAMPLES / "gitops"


def test_lint_checks_a_flows_parameters_against_its_template_in_another_file(
        tmp_path: Path) -> None:
    pipelines = GITOPS / "pipelines"
    ok = kflow("lint", pipelines / "etl.flowtemplate.yaml", pipelines / "etl-backfill.flow.yaml")
    assert ok.returncode == 0, ok.stderr
    assert "Flow default/etl-backfill-2026-11: ok (4 nodes, 4 queues)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kflow.dev/v1alpha1\nkind: Flow\nmetadata: {name: b}\n"
                   "spec: {templateRef: {name: etl, parameters: {pipelineId: 7, day: x}}}\n")
    result = kflow("lint", pipelines / "etl.flowtemplate.yaml", bad)
    assert result.returncode == 1
    assert ("spec.templateRef.parameters.pipelineId is 7, not a string: parameter "
            '"pipelineId" of FlowTemplate default/etl takes a string') in result.stderr
    assert 'FlowTemplate default/etl has no parameter "day"' in result.stderr
    alone = kflow("lint", bad)  # without its template only its own fields are checked
    assert alone.returncode == 0 and "FlowTemplate etl is not in the files checked" in \
        alone.stdout


def test_a_flow_made_from_a_template_runs_locally(tmp_path: Path) -> None:
    both = tmp_path / "etl.yaml"
    both.write_text((GITOPS / "pipelines" / "etl.flowtemplate.yaml").read_text() + "\n---\n"
                    + (GITOPS / "pipelines" / "etl-backfill.flow.yaml").read_text())
    result = kflow("run", "--local", both, "--handlers", HANDLERS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Flow default/etl-backfill-2026-11: Succeeded 4/4 done" in result.stdout
    # The template's parameters reached the nodes: the backfill's two records, its id.
    assert "extracted 2 records for backfill-2026-11" in result.stdout
    missing = kflow("run", "--local", GITOPS / "pipelines" / "etl-backfill.flow.yaml",
                    "--handlers", HANDLERS)
    assert missing.returncode == 2
    assert "holds no FlowTemplate etl; a local run reads the template from the same file" in \
        missing.stdout + missing.stderr


def test_lint_gives_a_cronflow_the_webhooks_verdict(tmp_path: Path) -> None:
    cronflow = GITOPS / "pipelines" / "etl-nightly.cronflow.yaml"
    ok = kflow("lint", cronflow)
    assert ok.returncode == 0, ok.stderr
    assert "CronFlow default/etl-nightly: ok (schedule '0 2 * * *')" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(cronflow.read_text().replace("0 2 * * *", "0 25 * * *"))
    result = kflow("lint", bad)
    assert result.returncode == 1
    assert "CronFlow default/etl-nightly: spec.schedule: '0 25 * * *' cannot be read" in \
        result.stderr
