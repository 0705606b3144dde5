"""Scheduling over the store: ready, dispatch, complete, fail, retry."""

from kflow.engine.engine import Engine
from kflow.engine.exits import EXIT_SUFFIX, exit_flow_id, is_exit_flow, main_flow_id
from kflow.engine.heap import tune_collector
from kflow.engine.types import (
    MISSING,
    NODE_STATES,
    TERMINAL_STATES,
    Attempt,
    ChildrenError,
    CompleteOutcome,
    FailOutcome,
    FlowNotFound,
    FlowRef,
    FlowSnapshot,
    FlowStateError,
    Inputs,
    NodeDetail,
    NodeFailure,
    NodeInfo,
    NodeNotFound,
    NodePage,
    NodeRow,
    QueueConfig,
)

__all__ = [
    "EXIT_SUFFIX",
    "MISSING",
    "NODE_STATES",
    "TERMINAL_STATES",
    "Attempt",
    "ChildrenError",
    "CompleteOutcome",
    "Engine",
    "FailOutcome",
    "FlowNotFound",
    "FlowRef",
    "FlowSnapshot",
    "FlowStateError",
    "Inputs",
    "NodeDetail",
    "NodeFailure",
    "NodeInfo",
    "NodeNotFound",
    "NodePage",
    "NodeRow",
    "QueueConfig",
    "exit_flow_id",
    "is_exit_flow",
    "main_flow_id",
    "tune_collector",
]
