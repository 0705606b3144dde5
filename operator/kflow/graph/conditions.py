"""`when` conditions: a node's CEL expression over its children's values and outcomes. Pure.

CEL comes from `common-expression-language` (Rust `cel` crate): one evaluation takes about
7 µs against 210 µs for the pure-Python `cel-python`, and its parse errors give line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cel

__all__ = ["VARIABLES", "Condition", "ConditionError", "compile_condition"]

# The names a condition sees, and what each holds (the message for an unknown name lists them).
VARIABLES: dict[str, str] = {
    "values": "each child's value by name",
    "outcomes": "each child's outcome by name",
    "data": "the node's data",
}

# Deeper values are refused before the library sees them: it converts them recursively on the
# native stack, and a value nested a few thousand levels deep crashes the process. JSON that
# kflow decodes is never deeper than this (json's own recursion limit).
MAX_DEPTH = 1000

# Names a comprehension macro binds: `list.all(f, ...)`, `map.exists(k, v, ...)`.
_BOUND = re.compile(
    r"\b(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?")
# Namespaces of the library's own functions (`optional.of(x)`): identifiers to CEL, not variables.
_NAMESPACES = frozenset({"optional"})
# One error of the library's parse report: `ERROR: <input>:1:12: Syntax error: ...`.
_PARSE_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_SHOWN = 300  # characters of an expression or a value quoted in a message


class ConditionError(ValueError):
    """A `when` expression that does not compile, fails while it runs, or gives no bool."""


def _quoted(expression: str) -> str:
    shown = expression if len(expression) <= _SHOWN else expression[:_SHOWN] + "…"
    return f'"{shown}"'


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parse_cause(message: str) -> str:
    """The library's parse report as one line per error: where, then what."""
    errors = _PARSE_ERROR.findall(message)
    if not errors:
        return _one_line(message.split("': ", 1)[-1])
    return "; ".join(f"line {line}, column {column}: {what.strip()}"
                     for line, column, what in errors)


@lru_cache(maxsize=64)
def _library_name(name: str) -> bool:
    """Whether CEL itself defines `name` as an identifier (a type: `int`, `string`, `map`...)."""
    import cel

    try:
        cel.evaluate(name, {})
    except Exception:  # the library raises builtin types with no common base of its own
        return False
    return True


def _unknown_names(expression: str, program: cel.Program) -> list[str]:
    bound = {name for match in _BOUND.finditer(expression) for name in match.groups() if name}
    return [name for name in program.variables()
            if name not in VARIABLES and name not in bound and name not in _NAMESPACES
            and not _library_name(name)]


def _cel_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _shown_value(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)  # CEL maps keep no order
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _too_deep(value: Any) -> bool:
    """Whether `value` nests lists and maps more than MAX_DEPTH levels deep. It walks the
    containers alone: for 100,000 small objects, 50 ms against the library's 0.8 s to convert."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH + 1):
        below: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, Mapping) else container
            for item in items:
                kind = type(item)
                if kind is dict or kind is list or (
                        kind not in _SCALARS and isinstance(item, Mapping | list | tuple)):
                    below.append(item)
        if not below:
            return False
        level = below
    return True


class Condition:
    """A compiled `when` expression, evaluated once per decision."""

    __slots__ = ("_program", "expression")

    def __init__(self, expression: str, program: cel.Program) -> None:
        self.expression = expression
        self._program = program

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"

    def evaluate(self, values: Mapping[str, Any], outcomes: Mapping[str, str], data: Any) -> bool:
        """Whether the node runs: the expression over its children's `values` (a map child's
        value is a list), their `outcomes` and its own `data` (JSON or None). Raises
        ConditionError when it fails or gives anything but a bool."""
        context = {"values": dict(values), "outcomes": dict(outcomes), "data": data}
        if _too_deep(context):
            raise ConditionError(
                f"when: {_quoted(self.expression)} failed: a value nests lists or objects more "
                f"than {MAX_DEPTH} levels deep")
        try:
            result = self._program.execute(context)
        # The library reports a missing key, a type mismatch, an overflow or an unknown function
        # as KeyError, TypeError, OverflowError, RuntimeError...: all are the expression's fault.
        except KeyError as error:
            raise ConditionError(
                f"when: {_quoted(self.expression)} failed: no such key: "
                f"{_shown_value(error.args[0] if error.args else None)}") from None
        except Exception as error:
            raise ConditionError(
                f"when: {_quoted(self.expression)} failed: {_one_line(str(error))}") from None
        if not isinstance(result, bool):
            shown = "null" if result is None else f"{_cel_type(result)} {_shown_value(result)}"
            raise ConditionError(
                f"when: {_quoted(self.expression)} gave {shown}, not true or false")
        return result


@lru_cache(maxsize=1024)
def compile_condition(expression: str) -> Condition:
    """The compiled form of a `when` expression (cached by its text). Raises ConditionError
    naming the position of a syntax error, or a name that is none of VARIABLES."""
    # Imported on first use: the package imports its command-line tool (0.4 s) with it.
    import cel

    try:
        program = cel.compile(expression)
    except Exception as error:  # ValueError today; any failure to compile is the expression's
        raise ConditionError(
            f"when: {_quoted(expression)} does not compile: {_parse_cause(str(error))}") from None
    unknown = _unknown_names(expression, program)
    if unknown:
        known = ", ".join(f"{name} ({what})" for name, what in VARIABLES.items())
        names = ", ".join(f'"{name}"' for name in unknown)
        raise ConditionError(
            f"when: {_quoted(expression)} does not compile: it names {names}, which is no "
            f"variable; a condition sees {known}")
    return Condition(expression, program)
