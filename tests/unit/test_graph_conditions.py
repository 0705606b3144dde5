"""`when` conditions: CEL over a node's children's values and outcomes and its own data, and
every way an expression is refused (at compile time, at run time, for a result that is no
bool)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kflow.graph.conditions import (
    MAX_DEPTH,
    Condition,
    ConditionError,
    compile_condition,
)

VALUES: dict[str, Any] = {
    "check": {"ok": True, "score": 0.75, "rows": 12, "label": "orders"},
    "files": [{"name": "a.csv", "rows": 3}, {"name": "b.csv", "rows": 5},
              {"name": "c.csv", "rows": 1}],
    "nothing": None,
}
OUTCOMES = {"check": "completed", "files": "completed", "load": "ignored", "nothing": "skipped"}
DATA: dict[str, Any] = {"mode": "full", "limit": 10, "regions": ["eu", "us"]}


def judge(expression: str, values: dict[str, Any] | None = None,
          outcomes: dict[str, str] | None = None, data: Any = DATA) -> bool:
    return compile_condition(expression).evaluate(
        VALUES if values is None else values, OUTCOMES if outcomes is None else outcomes, data)


def refusal(expression: str, values: dict[str, Any] | None = None, data: Any = DATA) -> str:
    with pytest.raises(ConditionError) as caught:
        judge(expression, values=values, data=data)
    return str(caught.value)


@pytest.mark.parametrize(("expression", "expected"), [
    ('values["check"].ok && outcomes["check"] == "completed"', True),
    ('values.check.ok && outcomes.load == "completed"', False),
    ('outcomes.load == "ignored"', True),
    ("values.check.rows > 10", True),
    ("values.check.rows > 12", False),
    ("values.check.score >= 0.5", True),
    ('values.check.label.startsWith("ord")', True),
    ('data.mode == "full" && data.limit < 100', True),
    ('"us" in data.regions', True),
    ('"asia" in data.regions', False),
    ("values.nothing == null", True),
    # A map child's value is a list: its size, and macros over its items.
    ('size(values["files"]) > 2', True),
    ("size(values.files) > 3", False),
    ("values.files.all(f, f.rows > 0)", True),
    ("values.files.exists(f, f.rows > 4)", True),
    ("values.files.exists(f, f.rows > 5)", False),
    ('values.files.filter(f, f.rows >= 3).map(f, f.name) == ["a.csv", "b.csv"]', True),
    ("outcomes.exists(name, outcomes[name] == \"skipped\")", True),
    # Optional children: has() on a map field, or `in` on the map's keys.
    ("has(values.check)", True),
    ("has(values.missing)", False),
    ('"missing" in values', False),
    ('!("missing" in values) || values.missing.ok', True),
    ("has(values.check.ok) && values.check.ok", True),
])
def test_an_expression_over_values_outcomes_and_data_decides(expression: str,
                                                             expected: bool) -> None:
    assert judge(expression) is expected


def test_a_node_without_data_sees_null() -> None:
    assert judge("data == null", data=None) is True
    assert judge('data != null && data.mode == "full"', data=None) is False


def test_json_integers_stay_ints_and_json_fractions_stay_doubles() -> None:
    values = {"whole": 3, "fraction": 3.5, "integral_float": 3.0, "flag": True}
    assert judge("type(values.whole) == int", values=values)
    assert judge("type(values.fraction) == double", values=values)
    assert judge("type(values.integral_float) == double", values=values)
    assert judge("type(values.flag) == bool", values=values)
    # CEL does not mix int and double in arithmetic, so an int is really an int here.
    assert judge("values.whole + 1 == 4", values=values)
    assert refusal("values.fraction + 1 > 0", values=values).startswith(
        'when: "values.fraction + 1 > 0" failed: Unsupported operation: float + int.')
    # Comparisons across numeric types are defined.
    assert judge("values.integral_float == 3 && values.fraction > 3", values=values)


def test_a_compiled_condition_is_cached_by_its_text_and_evaluated_many_times() -> None:
    condition = compile_condition("values.check.rows > data.limit")
    assert isinstance(condition, Condition)
    assert condition.expression == "values.check.rows > data.limit"
    assert compile_condition("values.check.rows > data.limit") is condition
    assert condition.evaluate(VALUES, OUTCOMES, {"limit": 5}) is True
    assert condition.evaluate(VALUES, OUTCOMES, {"limit": 50}) is False
    assert condition.evaluate(VALUES, OUTCOMES, {"limit": 5}) is True


@pytest.mark.parametrize(("expression", "expected"), [
    ("values.check.ok &&",
     'when: "values.check.ok &&" does not compile: line 1, column 19: Syntax error: mismatched '
     "input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', "
     "NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"),
    ("values.check.rows = 1",
     'when: "values.check.rows = 1" does not compile: line 1, column 19: Syntax error: token '
     "recognition error at: '= '; line 1, column 21: Syntax error: extraneous input '1' "
     "expecting <EOF>"),
    ('outcomes.load == "completed" &&\n  values.x ||',
     'when: "outcomes.load == "completed" &&\n  values.x ||" does not compile: line 2, '
     "column 14: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', "
     "'!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"),
])
def test_an_expression_that_does_not_parse_is_refused_with_its_position(
        expression: str, expected: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(expression)
    assert str(caught.value) == expected


@pytest.mark.parametrize(("expression", "names"), [
    ('value["check"].ok', '"value"'),
    ('outcome.load == "completed" && Data.mode == "x"', '"Data", "outcome"'),
    ("has(vals.check)", '"vals"'),
    ("values.files.all(f, g.rows > 0)", '"g"'),
])
def test_a_name_that_is_no_variable_is_refused_at_compile_time(expression: str,
                                                               names: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(expression)
    assert str(caught.value) == (
        f'when: "{expression}" does not compile: it names {names}, which is no variable; a '
        "condition sees values (each child's value by name), outcomes (each child's outcome "
        "by name), data (the node's data)")


@pytest.mark.parametrize("expression", [
    "values.files.all(f, f.rows > 0)",
    "values.files.map(f, f.rows).exists(n, n > 4)",
    "values.files.map(f, f.rows > 0, f.name).size() >= 0",
    "type(values.check) == map && type(data.mode) == string && type(null) == null_type",
    "optional.of(values.check).hasValue()",
])
def test_names_the_expression_binds_and_cel_defines_are_no_unknown_variables(
        expression: str) -> None:
    assert judge(expression) is True


def test_a_missing_key_at_run_time_fails_naming_the_key() -> None:
    assert refusal('values["load"].rows > 0') == (
        'when: "values["load"].rows > 0" failed: no such key: "load"')
    assert refusal("values.check.missing") == (
        'when: "values.check.missing" failed: no such key: "missing"')
    assert refusal("values.files[5].rows > 0") == (
        'when: "values.files[5].rows > 0" failed: index out of bounds: 5')


def test_other_run_time_errors_fail_with_the_cause_on_one_line() -> None:
    assert refusal("data.limit / (values.check.rows - 12) > 1") == (
        'when: "data.limit / (values.check.rows - 12) > 1" failed: division by zero in CEL '
        "expression")
    assert refusal("values.check.label > 1").startswith(
        'when: "values.check.label > 1" failed: No such overload: the operation is not defined '
        "for the given operand types.")
    assert refusal("9223372036854775807 + values.check.rows > 0") == (
        'when: "9223372036854775807 + values.check.rows > 0" failed: Arithmetic overflow in '
        "'add' on 9223372036854775807 and 12.")
    assert refusal('values.check.label.matches("(")') == (
        "when: \"values.check.label.matches(\"(\")\" failed: Function 'matches' error: '(' not a "
        "valid regex: regex parse error: ( ^ error: unclosed group. Check function arguments "
        "and their types.")


@pytest.mark.parametrize(("expression", "expected"), [
    ("values.check.rows", "gave int 12"),
    ("values.check.score", "gave double 0.75"),
    ("values.check.label", 'gave string "orders"'),
    ("values.files.map(f, f.rows)", "gave list [3, 5, 1]"),
    ("data", 'gave map {"limit": 10, "mode": "full", "regions": ["eu", "us"]}'),
    ("values.nothing", "gave null"),
])
def test_a_result_that_is_no_bool_fails(expression: str, expected: str) -> None:
    assert refusal(expression) == f'when: "{expression}" {expected}, not true or false'


def test_a_long_expression_or_value_is_shortened_in_messages() -> None:
    expression = "values.check.label == " + " + ".join(['"abcdefghij"'] * 40)
    message = refusal(expression.replace("==", "+"))
    assert message.startswith('when: "values.check.label + "abcdefghij"')
    assert '…" gave string "ordersabcdefghij' in message
    assert message.endswith('abcdefghijabc…, not true or false')
    assert len(message) == len('when: "" gave string , not true or false') + 2 * 301


def test_a_value_nested_deeper_than_json_allows_is_refused_before_the_library_sees_it() -> None:
    deep: Any = None
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    assert refusal("size(data) == 1", data=deep) == (
        'when: "size(data) == 1" failed: a value nests lists or objects more than 1000 levels '
        "deep")
    shallow: Any = None
    for _ in range(MAX_DEPTH - 5):
        shallow = [shallow]
    assert judge("size(data) == 1", data=shallow) is True


@pytest.mark.parametrize("expression", [
    '__import__("os").system("touch {marker}")',
    'values.__class__.__init__.__globals__["os"]',
    'data.__class__ == "dict"',
    'exec("open(\'{marker}\', \'w\')")',
    'eval("1")',
    "values.check.__dict__",
])
def test_an_expression_cannot_reach_python(expression: str, tmp_path: Path) -> None:
    marker = tmp_path / "reached"
    source = expression.replace("{marker}", str(marker))
    with pytest.raises(ConditionError) as caught:
        compile_condition(source).evaluate(VALUES, OUTCOMES, DATA)
    assert str(caught.value).startswith(f'when: "{source}" ')
    assert not marker.exists()


def test_python_objects_in_the_inputs_are_no_functions_or_attributes_for_the_expression() -> None:
    # Only JSON reaches the engine; should anything else slip in, CEL refuses to convert it
    # rather than let the expression call it.
    message = refusal("values.call(1) == 1", values={"call": print})
    assert message.startswith('when: "values.call(1) == 1" failed: Conversion Error:')
