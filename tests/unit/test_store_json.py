"""Values as the store writes and reads them (kflow.store.codec.dumps/loads): orjson, with
the standard library's answers wherever orjson would answer differently."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import pytest

from kflow.api.states import NodeState
from kflow.store.codec import dumps, loads, reply_loads


def stdlib(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("value", [
    {"ok": True, "n": 3, "x": 0.1, "tiny": 1e-7, "big": 1.5e300, "s": "Zürich ✓ 東京",
     "none": None},
    [1, [2, [3, {"deep": []}]], "", {}],
    {"quote": 'say "hi"\n\ttab \\ slash', "ctrl": "\u0001"},
    ("a", "tuple"),
    2**63 - 1, -(2**63),
    {7: "int key", 2.5: "float key", False: "bool key", None: "null key"},
    NodeState.COMPLETED,
])
def test_what_json_can_encode_reads_back_as_the_standard_library_would(value: Any) -> None:
    assert loads(dumps(value)) == json.loads(stdlib(value))


def test_an_integer_beyond_64_bits_is_kept_exactly() -> None:
    value = {"id": 2**80 + 1}
    assert dumps(value) == stdlib(value)
    assert loads(dumps(value)) == value


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [datetime.datetime(2026, 12, 1), Point(1), {1, 2}, object()])
def test_what_is_not_json_is_refused_as_before(value: Any) -> None:
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        dumps(value)


def test_a_lone_surrogate_is_written_as_the_standard_library_writes_it() -> None:
    assert dumps({"s": "\ud800"}) == stdlib({"s": "\ud800"})


def test_nan_and_infinities_are_written_as_null() -> None:
    # The standard library writes NaN, which is not JSON; orjson writes null.
    assert dumps([math.nan, math.inf, -math.inf]) == "[null,null,null]"


def test_values_written_by_earlier_versions_still_read() -> None:
    legacy = stdlib({"v": math.nan, "w": math.inf})  # 'NaN' and 'Infinity'
    got = loads(legacy)
    assert math.isnan(got["v"]) and got["w"] == math.inf
    assert loads(b'{"a":[1,2]}') == {"a": [1, 2]}
    assert loads(None) is None


def test_text_that_is_not_json_raises_the_standard_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads("{not json")


def test_a_script_reply_reads_as_the_standard_library_reads_it() -> None:
    # What cjson writes: numbers as doubles of 14 digits, stored values as strings.
    raw = '["Running","ns","f",[["a","ok",1,"{\\"id\\":1208925819614629174706177}",-1]],' \
          '[],{},{},false]'
    assert reply_loads(raw) == json.loads(raw)
    assert loads(reply_loads(raw)[3][0][3]) == {"id": 2**80 + 1}  # the value, read exactly
