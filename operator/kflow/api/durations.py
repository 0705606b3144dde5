"""Parse and format the durations of Flow and Queue specs ("500ms", "30s", "2m", "1h" or ms)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# One or more <number><unit> pairs, like Go's time.ParseDuration ("1m30s"); a bare integer is ms.
DURATION_PATTERN = r"^(([0-9]+(\.[0-9]+)?)(ms|s|m|h))+$|^[0-9]+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(DURATION_PATTERN)
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
# Beyond 2**53 a JSON number (and a Redis score) no longer holds every integer exactly.
MAX_DURATION_MS = 2**53 - 1


def parse_duration(value: str | int) -> int:
    """`value` in milliseconds: an integer is already ms; a string is "500ms", "30s", "1m30s".

    Raises ValueError with a message that shows the accepted forms.
    """
    if isinstance(value, bool):
        # bool is an int subclass in Python; `delay: true` is a mistake, not 1 ms.
        raise ValueError(
            f"a duration must be a number of milliseconds or a string like "
            f'"30s", not a boolean ({value!r})'
        )
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration must not be negative (got {value})")
        if value > MAX_DURATION_MS:
            raise ValueError(f"a duration must be at most {MAX_DURATION_MS} ms (got {value})")
        return value
    if not isinstance(value, str):
        raise ValueError(
            f"a duration must be an integer number of milliseconds or a string like "
            f'"500ms", "30s", "2m", "1h" (got {type(value).__name__} {value!r})'
        )
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"a duration must not be negative (got {value!r})")
    if not _WHOLE.match(text):
        raise ValueError(
            f'{value!r} is not a duration; write a number with a unit, like "500ms", "30s", '
            f'"2m", "1h" or "1m30s", or an integer number of milliseconds'
        )
    if text.isdigit():
        return parse_duration(int(text))
    total = Decimal(0)
    for number, unit in _PART.findall(text):
        try:
            total += Decimal(number) * _UNIT_MS[unit]
        except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
            raise ValueError(f"{value!r} is not a duration") from exc
    if total != total.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of milliseconds")
    return parse_duration(int(total))


def format_duration(ms: int) -> str:
    """Render milliseconds the short way people write them: 1500 -> "1.5s", 90000 -> "1m30s"."""
    if ms < 0:
        raise ValueError(f"a duration must not be negative (got {ms})")
    if ms < 1_000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if seconds or millis:
        parts.append(f"{seconds}.{millis:03d}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)
