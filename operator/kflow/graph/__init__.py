"""Compile a Flow spec into a validated DAG; pure, no I/O."""

from kflow.graph.compiler import GraphError, GraphErrors, compile_flow, merge_options
from kflow.graph.dag import BackoffType, CompiledFlow, CompiledNode, NodeOptions, OnFailure
from kflow.graph.verdict import Verdict, check_manifest

__all__ = [
    "BackoffType",
    "CompiledFlow",
    "CompiledNode",
    "GraphError",
    "GraphErrors",
    "NodeOptions",
    "OnFailure",
    "Verdict",
    "check_manifest",
    "compile_flow",
    "merge_options",
]
