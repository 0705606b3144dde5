"""Map nodes (`forEach`): the list a map node runs over, and each item's data. Pure."""

from __future__ import annotations

from typing import Any

from kflow.graph.dag import MapSource

__all__ = ["MapListError", "item_data", "list_at"]


class MapListError(ValueError):
    """The `from` node's value holds no list at the map node's path (the map node fails)."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    return "a list"


def list_at(node: str, source: MapSource, value: Any) -> list[Any]:
    """The items of map node `node` whose `from` node returned `value`: the list at the
    source's path. Raises MapListError naming the node, the path and what was found."""
    assert source.from_node is not None
    where = ".".join(source.path) or "(the whole value)"
    current = value
    walked: list[str] = []
    for key in source.path:
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            at = ".".join(walked) or "the value"
            keys = ""
            if isinstance(current, dict):
                shown = sorted(current)[:10]
                keys = f" (its keys: {', '.join(shown) or 'none'})"
            raise MapListError(
                f'forEach of node "{node}": node "{source.from_node}" returned no "{key}" '
                f"at {at}, which is {_kind(current)}{keys}; forEach.path must lead to a list "
                f"in its value (path: {where})")
        walked.append(key)
    if not isinstance(current, list):
        raise MapListError(
            f'forEach of node "{node}": node "{source.from_node}" returned {_kind(current)} '
            f"at path {where}, not a list; return a list there, or point forEach.path at one")
    return current


def item_data(data: Any, item: Any, index: int) -> dict[str, Any]:
    """An item node's data: the map node's data (an object, or nothing) with the item and
    its position added."""
    return {**(data or {}), "item": item, "index": index}
