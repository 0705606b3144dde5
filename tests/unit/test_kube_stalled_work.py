"""When the operator takes over a forEach's expansion or a condition's judgement that a dead
process left half done: the work is pending and has not moved for the stall period."""

from __future__ import annotations

from kflow.api.ids import FlowId
from kflow.api.states import FlowPhase, NodeState
from kflow.engine import FlowSnapshot
from kflow.kube.flows import StalledWork

FLOW = FlowId.of("etl", "u-1")


def snap(total: int, expanding: int = 0, deciding: int = 0,
         phase: FlowPhase = FlowPhase.RUNNING) -> FlowSnapshot:
    counts = {NodeState.EXPANDING: expanding, NodeState.DECIDING: deciding,
              NodeState.ACTIVE: 1}
    return FlowSnapshot(phase=phase, total=total, counts={k: v for k, v in counts.items() if v},
                        done=0, started_at_ms=None, finished_at_ms=None)


def test_an_expansion_that_keeps_adding_items_is_never_taken_over() -> None:
    watch = StalledWork(stall_seconds=10)
    for second in range(0, 120, 2):  # 500 items more at every look
        assert not watch.stalled(FLOW, snap(1 + 500 * second, expanding=1), float(second))
    assert watch.pending(FLOW)


def test_an_expansion_that_stopped_is_taken_over_once_per_stall_period() -> None:
    watch = StalledWork(stall_seconds=10)
    verdicts = [watch.stalled(FLOW, snap(401, expanding=1), float(t)) for t in range(0, 31)]
    assert [t for t, taken in enumerate(verdicts) if taken] == [10, 20, 30]


def test_a_judgement_left_pending_is_taken_over_and_nothing_pending_is_forgotten() -> None:
    watch = StalledWork(stall_seconds=10)
    assert not watch.stalled(FLOW, snap(3, deciding=1), 0.0)
    assert watch.stalled(FLOW, snap(3, deciding=1), 10.0)
    assert not watch.stalled(FLOW, snap(3), 11.0)  # judged: nothing pending
    assert not watch.pending(FLOW)
    assert not watch.stalled(FLOW, snap(3, deciding=1), 25.0)  # a new wait starts over
    assert not watch.stalled(FLOW, snap(3, expanding=1, phase=FlowPhase.FAILED), 99.0)
    assert not watch.pending(FLOW)  # an ended flow has nothing to go on with
