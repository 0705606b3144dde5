"""Compile a Flow spec into a validated DAG; pure, no I/O."""

from kflow.graph.compiler import GraphError, GraphErrors, compile_flow, merge_options
from kflow.graph.dag import CompiledFlow, CompiledNode, CompiledOptions
from kflow.graph.verdict import Verdict, check_manifest

__all__ = [
    "CompiledFlow",
    "CompiledNode",
    "CompiledOptions",
    "GraphError",
    "GraphErrors",
    "Verdict",
    "check_manifest",
    "compile_flow",
    "merge_options",
]
