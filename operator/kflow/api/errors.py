"""Spec errors that name the object, the field and the fix, and their translation from pydantic."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

# Patterns of the models and how to say them to a person.
PATTERN_RULES: dict[str, str] = {}

# How many problems one aggregated error spells out before it just counts the rest.
MAX_LISTED_ERRORS = 50


class SpecError(ValueError):
    """A Flow or Queue spec that kflow cannot accept.

    `str()` is the whole sentence: `Flow etl/orders-7: node "load" lists child "transfrom",
    which no node defines (did you mean "transform"?)`.
    """

    def __init__(self, object_ref: str, field: str, message: str) -> None:
        super().__init__(object_ref, field, message)
        self.object_ref = object_ref  # "Flow etl/orders-7"
        self.field = field  # "spec.nodes[2].children[0]"; "" when the problem is the whole object
        self.message = message  # the sentence after "<object_ref>: "

    @property
    def errors(self) -> list[SpecError]:
        """Every problem this error stands for; a single error stands for itself."""
        return [self]

    def __str__(self) -> str:
        return f"{self.object_ref}: {self.message}"


class SpecErrors(SpecError):
    """Several problems found in one pass, so a user fixes them all before trying again."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        flat = [inner for error in errors for inner in error.errors]
        if not flat:
            raise ValueError("SpecErrors needs at least one error")
        first = flat[0]
        super().__init__(first.object_ref, first.field, _summary(flat))
        self._errors = flat

    @property
    def errors(self) -> list[SpecError]:
        return list(self._errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._errors,))


def _summary(errors: Sequence[SpecError]) -> str:
    if len(errors) == 1:
        return errors[0].message
    same_object = all(error.object_ref == errors[0].object_ref for error in errors)
    lines = [f"{len(errors)} problems:"]
    for error in errors[:MAX_LISTED_ERRORS]:
        text = error.message if same_object else str(error)
        lines.append(f"  - {text}")
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"  - ... and {len(errors) - MAX_LISTED_ERRORS} more")
    return "\n".join(lines)


def combine(errors: Sequence[SpecError]) -> SpecError:
    """One error for a list of them: the error itself when alone, else a SpecErrors."""
    if len(errors) == 1:
        return errors[0]
    return SpecErrors(errors)


def error_lines(exc: SpecError, *, limit: int = MAX_LISTED_ERRORS) -> list[str]:
    """One line per problem, each naming the object, the node, the field and the fix.

    The form `kflow lint` prints and the admission webhook answers `kubectl apply` with; a
    field the sentence does not already name is added as `(field spec.nodes[0]...)`.
    """
    errors = exc.errors
    lines = []
    for error in errors[:limit]:
        text = str(error)
        if error.field and error.field not in text:
            text += f" (field {error.field})"
        lines.append(text)
    if len(errors) > limit:
        lines.append(f"{exc.object_ref}: ... and {len(errors) - limit} more problems")
    return lines


def format_path(loc: Iterable[str | int]) -> str:
    """`("spec", "nodes", 2, "opts")` -> `spec.nodes[2].opts`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def join_path(prefix: str, rest: str) -> str:
    if not prefix:
        return rest
    if not rest:
        return prefix
    return prefix + rest if rest.startswith("[") else f"{prefix}.{rest}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean "transform"?)` when a close candidate exists, else ""."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{matches[0]}"?)' if matches else ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _node_label(loc: Sequence[str | int], root_input: Any, base_node: str | None) -> str | None:
    """The name of the innermost node that `loc` points into, read from the raw input."""
    label = base_node
    current = root_input
    previous: str | int | None = None
    for part in loc:
        if isinstance(current, Mapping) and isinstance(part, str):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            if previous in ("nodes", "children") and isinstance(current, Mapping):
                name = current.get("name")
                label = name if isinstance(name, str) and name else f"#{part}"
        else:
            break
        previous = part
    return label


def _describe(error: ErrorDetails, path: str, known_fields: Iterable[str]) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = error.get("input")
    field = path or "the object"
    if kind == "missing":
        return f"{field} is required; add it"
    if kind == "extra_forbidden":
        name = path.rsplit(".", 1)[-1]
        return f"{field} is not a field kflow knows{did_you_mean(name, known_fields)}; remove it"
    if kind == "literal_error":
        return f"{field} must be one of {ctx.get('expected', '?')} (got {_short(got)})"
    if kind == "greater_than_equal":
        return f"{field} must be at least {ctx.get('ge')} (got {_short(got)})"
    if kind == "less_than_equal":
        return f"{field} must be at most {ctx.get('le')} (got {_short(got)})"
    if kind == "greater_than":
        return f"{field} must be greater than {ctx.get('gt')} (got {_short(got)})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{field} must be a whole number (got {_short(got)})"
    if kind in ("float_type", "float_parsing"):
        return f"{field} must be a number (got {_short(got)})"
    if kind in ("bool_type", "bool_parsing"):
        return f"{field} must be true or false (got {_short(got)})"
    if kind == "string_type":
        return f"{field} must be a string (got {_short(got)})"
    if kind in ("list_type", "tuple_type"):
        return f"{field} must be a list (got {_short(got)})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{field} must be a mapping (got {_short(got)})"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        rule = PATTERN_RULES.get(pattern, f"match the pattern {pattern}")
        return f"{field} is {_short(got)}, but it must {rule}"
    if kind == "string_too_long":
        return f"{field} must be at most {ctx.get('max_length')} characters long"
    if kind == "string_too_short":
        return f"{field} must not be empty"
    if kind == "too_short":
        return f"{field} must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"{field} must have at most {ctx.get('max_length')} item(s)"
    message = error["msg"]
    # Our own validators raise ValueError with a complete sentence; pydantic prefixes it.
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if not path:
        return message
    # Our own messages that read on from the field name ("is 5 MiB ...", "must be ...").
    if message.startswith(("is ", "must ")):
        return f"{field} {message}"
    return f"{field}: {message}"


def from_validation_error(
    exc: ValidationError,
    object_ref: str,
    *,
    prefix: str = "",
    root_input: Any = None,
    base_node: str | None = None,
    known_fields: Iterable[str] = (),
) -> list[SpecError]:
    """Translate every error of a pydantic ValidationError into a SpecError.

    `prefix` is the path of the validated value inside the object (e.g. `spec.nodes[0].children[1]`
    when one inline node was validated on its own); `root_input` is the raw input, read to name
    the node a field belongs to; `base_node` names the node when `root_input` is one node.
    """
    fields = list(known_fields)
    result: list[SpecError] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = join_path(prefix, format_path(loc))
        message = _describe(error, path, fields)
        node = _node_label(loc, root_input, base_node)
        if node is not None and not message.startswith("node "):
            message = f'node "{node}": {message}'
        result.append(SpecError(object_ref, path, message))
    return result
