"""How a flow ends under `kflow run --local`: continueParent siblings still run, a failed
flow's running nodes finish, and the summary agrees with every node's state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.local_support import ROOT

pytestmark = pytest.mark.redis

KFLOW = ROOT / ".venv" / "bin" / "kflow"

HANDLERS = '''
import time
from pathlib import Path

from kflow.sdk import handler

MARKS = Path(__file__).parent / "marks"


@handler("work")
def work(job):
    data = job.data or {}
    if data.get("fail"):
        raise RuntimeError(f"{job.name} broke")
    time.sleep(data.get("sleep", 0))
    (MARKS / job.name).write_text("finished")
    return job.name


@handler("top")
def top(job):
    return {"values": sorted(job.children_values()), "failed": job.failed_children()}
'''


def run(tmp_path: Path, nodes: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    (tmp_path / "marks").mkdir()
    (tmp_path / "handlers.py").write_text(HANDLERS)
    flow = tmp_path / "flow.yaml"
    flow.write_text("apiVersion: kflow.dev/v1alpha1\nkind: Flow\n"
                    "metadata: {name: endings, namespace: shop}\nspec:\n  nodes:\n" + nodes)
    result = subprocess.run([str(KFLOW), "run", "--local", str(flow), "--handlers",
                             str(tmp_path / "handlers.py"), "--quiet"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    marks = {p.name: p.read_text() for p in (tmp_path / "marks").iterdir()}
    return result, marks


def test_continue_parent_runs_the_parent_early_and_every_sibling_to_its_end(
        tmp_path: Path) -> None:
    result, marks = run(tmp_path, """\
  - name: parent
    queue: top
    children:
    - {name: cont-1, queue: work, data: {fail: true}, opts: {continueParentOnFailure: true}}
    - {name: ok-1, queue: work}
    - {name: slow-1, queue: work, data: {sleep: 2}}
""")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.startswith("Flow shop/endings: Succeeded 4/4 done (3 completed, 1 failed)"), out
    assert marks == {"ok-1": "finished", "slow-1": "finished"}  # slow-1 was not cut off
    assert "released" not in out
    assert 'cont-1 [work] failed' in out and "slow-1 [work] completed" in out
    # The parent read the failed child's error, as BullMQ's getFailedChildrenValues gives it.
    parent_line = next(line for line in out.splitlines() if "parent [top] completed" in line)
    assert '"failed":{"cont-1":"RuntimeError:cont-1' in parent_line.replace(" ", "")


def test_five_children_continue_parent_first_all_five_are_processed(tmp_path: Path) -> None:
    children = "\n".join(
        f"    - {{name: c{i}, queue: work, data: {{sleep: 0.3}}}}" for i in range(1, 5))
    result, marks = run(tmp_path, f"""\
  - name: parent
    queue: top
    children:
    - {{name: c0, queue: work, data: {{fail: true}}, opts: {{onFailure: continueParent}}}}
{children}
""")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.startswith("Flow shop/endings: Succeeded 6/6 done (5 completed, 1 failed)"), out
    assert sorted(marks) == ["c1", "c2", "c3", "c4"]


def test_a_failed_flow_lets_running_nodes_finish_and_cancels_the_rest(tmp_path: Path) -> None:
    result, marks = run(tmp_path, """\
  - name: parent
    queue: top
    children:
    - {name: boom, queue: work, data: {fail: true}}
    - {name: slow, queue: work, data: {sleep: 2}}
    - name: later
      queue: top
      children: [slow]
""")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    # slow ran to its end; later (waiting on slow) never started and says why.
    assert out.startswith("Flow shop/endings: Failed 4/4 done "), out
    summary = out.splitlines()[0]
    assert "1 cancelled" in summary and "1 completed" in summary and "2 failed" in summary
    assert marks == {"slow": "finished"}
    assert "later [top] cancelled: not started: the flow failed" in out, out
    assert "released" not in out
