"""Durations: the written forms kflow accepts, and the clear refusals of the rest."""

from __future__ import annotations

import pytest

from kflow.api import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("1m30s", 90_000),
        ("1.5s", 1_500),
        ("0s", 0),
        ("250", 250),
        (250, 250),
        (0, 0),
        (" 2m ", 120_000),
    ],
)
def test_accepted_forms_become_milliseconds(text: str | int, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (-1, "must not be negative"),
        ("-5s", "must not be negative"),
        ("5 minutes", "is not a duration"),
        ("1d", "is not a duration"),
        ("s", "is not a duration"),
        ("", "is not a duration"),
        ("1.5ms", "whole number of milliseconds"),
        (True, "not a boolean"),
        (1.5, "got float"),
        (None, "got NoneType"),
        (2**60, "at most"),
    ],
)
def test_refusals_say_what_is_wrong(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0ms"), (999, "999ms"), (1_500, "1.5s"), (90_000, "1m30s"), (3_600_000, "1h")],
)
def test_format_round_trips(ms: int, text: str) -> None:
    assert format_duration(ms) == text
    assert parse_duration(text) == ms
