"""The Lua scripts as source: each one, with its includes inlined, defines every function it
calls, no redis.call passes a number literal, and a script that takes only the first keys of
its group reaches no key beyond them.

Run as functions (kflow.store.scripts.libraries) every include is in scope, so a script that
calls a function of an include it does not name still works there; by EVALSHA (a tenant
refused FCALL, a server without functions) the script runs alone and the call fails on the
first run that reaches it. A number passed to redis.call is formatted by Redis with "%.17g",
which costs more than most commands (bench/RESULTS.md); scripts pass text.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from kflow.store.keys import FLOW_KEY_NAMES
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


# A top-level function of a script with its includes inlined: "local function f(", "f = function(".
_DEFINITION = re.compile(r"^(?:local function (\w+)\s*\(|(\w+)\s*=\s*function\s*\()", re.M)


def _keys_reached(own: str, inlined: str) -> set[str]:
    """The flow keys (K_*) named by the script's own code or by any function it calls, at any
    depth: each top-level function's body runs to the next top-level definition."""
    code = _code(inlined)
    starts = list(_DEFINITION.finditer(code))
    bodies: dict[str, str] = {}
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(code)
        name = match.group(1) or match.group(2)
        bodies[name] = bodies.get(name, "") + code[match.start():end]
    seen: set[str] = set()
    todo = [_code(own)]
    keys: set[str] = set()
    while todo:
        text = todo.pop()
        keys |= set(re.findall(r"\bK_([A-Z]+)\b", text))
        for called in set(re.findall(r"(?<![\w.:])(\w+)\s*\(", text)) - seen:
            seen.add(called)
            if called in bodies:
                todo.append(bodies[called])
    return {k.lower() for k in keys}


def _prefix_scripts() -> list[str]:
    return sorted(n for n, (nkeys, _) in script_sources().items()
                  if n.startswith("flow/") and nkeys < len(FLOW_KEY_NAMES))


def test_the_hot_scripts_take_a_prefix_of_the_keys() -> None:
    """Redis builds a call's KEYS one key at a time: the hot scripts take fewer (lua/flow/_keys)."""
    assert _prefix_scripts() == ["flow/add", "flow/start"]


@pytest.mark.parametrize("name", _prefix_scripts())
def test_a_script_taking_a_prefix_of_the_keys_reaches_no_key_beyond_it(name: str) -> None:
    nkeys, inlined = script_sources()[name]
    own = (resources.files("kflow.store.lua") / f"{name}.lua").read_text("utf-8")
    beyond = _keys_reached(own, inlined) - set(FLOW_KEY_NAMES[:nkeys])
    assert not beyond, (
        f"lua/{name}.lua takes the keys through {FLOW_KEY_NAMES[nkeys - 1]} but reaches "
        f"{sorted(beyond)}: name a later key in its @keys-through line")


def test_the_key_check_follows_calls_through_functions() -> None:
    inlined = ("local function a() return K_TOKEN end\n"
               "local function b() return a() end\n"
               "local function c() return K_PODLOGS end\n")
    assert _keys_reached("return b()\n", inlined) == {"token"}
