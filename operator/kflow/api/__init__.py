"""Pydantic models of Flow and Queue: the one description of the schema."""

from kflow.api.durations import format_duration, parse_duration
from kflow.api.errors import SpecError, SpecErrors
from kflow.api.ids import FlowId, QueueId
from kflow.api.manifests import load_manifests, parse_manifest
from kflow.api.models import (
    API_VERSION,
    MAX_DATA_BYTES,
    MAX_FIRST_FAILURES,
    MAX_PRIORITY,
    Backoff,
    Condition,
    FailedNode,
    Flow,
    FlowSpec,
    FlowStatus,
    LocatedNode,
    NodeCounts,
    NodeOpts,
    NodeSpec,
    ObjectMeta,
    Queue,
    QueueSpec,
    QueueStatus,
    RateLimit,
    Workers,
)

__all__ = [
    "API_VERSION",
    "MAX_DATA_BYTES",
    "MAX_FIRST_FAILURES",
    "MAX_PRIORITY",
    "Backoff",
    "Condition",
    "FailedNode",
    "Flow",
    "FlowId",
    "FlowSpec",
    "FlowStatus",
    "LocatedNode",
    "NodeCounts",
    "NodeOpts",
    "NodeSpec",
    "ObjectMeta",
    "Queue",
    "QueueId",
    "QueueSpec",
    "QueueStatus",
    "RateLimit",
    "SpecError",
    "SpecErrors",
    "Workers",
    "format_duration",
    "load_manifests",
    "parse_duration",
    "parse_manifest",
]
