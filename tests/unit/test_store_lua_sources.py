"""The Lua scripts as source: each one, with its includes inlined, defines every function it
calls, and no redis.call passes a number literal.

Run as functions (kflow.store.scripts.libraries) every include is in scope, so a script that
calls a function of an include it does not name still works there; by EVALSHA (a tenant
refused FCALL, a server without functions) the script runs alone and the call fails on the
first run that reaches it. A number passed to redis.call is formatted by Redis with "%.17g",
which costs more than most commands (bench/RESULTS.md); scripts pass text.
"""

from __future__ import annotations

import re

import pytest

from kflow.store.scripts import script_sources

# Lua's and Redis's globals that scripts may call.
_GLOBALS = frozenset({
    "redis", "cjson", "string", "math", "table", "tonumber", "tostring", "type", "pairs",
    "ipairs", "next", "unpack", "select", "error", "assert", "setmetatable", "getmetatable",
    "rawget", "rawset"})
_KEYWORDS = frozenset({
    "function", "if", "and", "or", "not", "return", "elseif", "while", "until", "local"})


def _code(source: str) -> str:
    """The source without comments and with every string literal emptied."""
    source = re.sub(r"--\[\[.*?\]\]", "", source, flags=re.S)
    source = re.sub(r"--[^\n]*", "", source)
    return re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", source)


def _undefined_calls(source: str) -> set[str]:
    code = _code(source)
    known = set(re.findall(r"local function (\w+)", code))
    known |= set(re.findall(r"^(\w+)\s*=\s*function", code, flags=re.M))
    for names in re.findall(r"local ([\w, ]+?)\s*(?:=|\n)", code):
        known |= {n.strip() for n in names.split(",")}
    for params in re.findall(r"function\s*\w*\(([^)]*)\)", code):
        known |= {p.strip() for p in params.split(",")}
    called = set(re.findall(r"(?<![\w.:])(\w+)\s*\(", code))
    return called - known - _GLOBALS - _KEYWORDS


@pytest.mark.parametrize("name", sorted(script_sources()))
def test_a_script_alone_defines_every_function_it_calls(name: str) -> None:
    _, source = script_sources()[name]
    missing = _undefined_calls(source)
    assert not missing, (
        f"lua/{name}.lua calls {sorted(missing)} but neither it nor its includes define them: "
        "add the include that does (flow/_lib needs flow/_keys and _clock before it)")


def test_the_check_finds_a_call_to_an_undefined_function() -> None:
    source = "local function a() return 1 end\nlocal x = a() + b('k')\n"
    assert _undefined_calls(source) == {"b"}


@pytest.mark.parametrize("name", sorted(script_sources()))
def test_no_redis_call_passes_a_number_literal(name: str) -> None:
    _, source = script_sources()[name]
    code = _code(source)
    found = [m.group(0) for m in re.finditer(r"redis\.call\([^()]*\)", code)
             if re.search(r",\s*-?\d+(\.\d+)?\s*(?=[,)])", m.group(0))]
    assert not found, (f"lua/{name}.lua passes a number to redis.call: {found}; pass text "
                       "(int_text, ms_text, '1'), which Redis does not have to format")
