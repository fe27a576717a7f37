"""Datapoint types: validating a value and the forms it is kept in.

Every value has
- a canonical JSON form (what the API returns), and
- a sortable form that the database compares with an index: `num` (a float,
  for integer, decimal and boolean) or `text` (for string, choice, date and
  datetime; ISO dates and fixed-width UTC datetimes sort as text in time order).

The StringQuery compiler encodes its literals with the same `sortable_form`,
so a query compares like with like.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

DATAPOINT_TYPES = ("string", "integer", "decimal", "boolean", "date", "datetime", "choice")
NUMERIC_TYPES = ("integer", "decimal")
ORDERED_TYPES = ("integer", "decimal", "date", "datetime")
TEXT_TYPES = ("string", "choice", "date", "datetime")
# Integers beyond this lose exactness as floats, so comparisons would too.
MAX_EXACT_INTEGER = 2**53
MAX_STRING_LENGTH = 1000

Column = Literal["num", "text"]


class InvalidValue(Exception):
    """A value that does not fit its type; `rule` names what it broke."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class TypedValue:
    value: Any  # canonical JSON
    num: float | None
    text: str | None


def sortable_column(dp_type: str) -> Column:
    return "text" if dp_type in TEXT_TYPES else "num"


def parse_date(raw: Any) -> date:
    if not isinstance(raw, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise InvalidValue("type", "expected a date 'YYYY-MM-DD'")
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidValue("type", f"not a real date: {raw!r}") from exc


def parse_datetime(raw: Any) -> datetime:
    """An ISO 8601 datetime; an offset is converted to UTC, none means UTC."""
    if not isinstance(raw, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.*", raw):
        raise InvalidValue("type", "expected an ISO 8601 datetime 'YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]'")
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError as exc:
        raise InvalidValue("type", f"not a real datetime: {raw!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_datetime(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return text


def _number(raw: Any, dp_type: str) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise InvalidValue("type", f"expected a number for a {dp_type} datapoint")
    number: int | float = raw
    if isinstance(number, float) and not math.isfinite(number):
        raise InvalidValue("type", "expected a finite number")
    if dp_type == "integer" and isinstance(number, float):
        if not number.is_integer():
            raise InvalidValue("type", "expected a whole number for an integer datapoint")
        number = int(number)
    # Values compare as doubles: a whole number beyond 2**53 would not be exact
    # (and one beyond ~1.8e308 would not convert at all), for decimals as for integers.
    if isinstance(number, int) and abs(number) > MAX_EXACT_INTEGER:
        raise InvalidValue("range", f"integers are limited to +/-{MAX_EXACT_INTEGER}")
    return number


def canonical(dp_type: str, raw: Any, choices: list[str] | None = None) -> Any:
    """The canonical JSON form of a raw value of this type (type rules only)."""
    match dp_type:
        case "string":
            if not isinstance(raw, str):
                raise InvalidValue("type", "expected a string")
            if len(raw) > MAX_STRING_LENGTH:
                raise InvalidValue("length", f"at most {MAX_STRING_LENGTH} characters")
            return raw
        case "integer" | "decimal":
            return _number(raw, dp_type)
        case "boolean":
            if not isinstance(raw, bool):
                raise InvalidValue("type", "expected true or false")
            return raw
        case "date":
            return parse_date(raw).isoformat()
        case "datetime":
            return format_datetime(parse_datetime(raw))
        case "choice":
            if not isinstance(raw, str):
                raise InvalidValue("type", "expected one of the choices, as a string")
            if choices is not None and raw not in choices:
                raise InvalidValue("choices", f"must be one of {choices}")
            return raw
    raise InvalidValue("type", f"unknown datapoint type {dp_type!r}")


def sortable_form(dp_type: str, value: Any) -> tuple[float | None, str | None]:
    """(num, text) for a canonical value: exactly one of them is set."""
    match dp_type:
        case "integer" | "decimal":
            return float(value), None
        case "boolean":
            return (1.0 if value else 0.0), None
        case "datetime":
            return None, parse_datetime(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        case _:
            return None, str(value)


def _order_key(dp_type: str, value: Any) -> Any:
    if dp_type == "date":
        return parse_date(value)
    if dp_type == "datetime":
        return parse_datetime(value)
    return value


def check_constraints(
    dp_type: str,
    value: Any,
    *,
    minimum: Any = None,
    maximum: Any = None,
    pattern: str | None = None,
) -> None:
    """The definition's own rules on a canonical value: min/max and pattern."""
    if minimum is not None and _order_key(dp_type, value) < _order_key(dp_type, minimum):
        raise InvalidValue("minimum", f"must be >= {minimum}")
    if maximum is not None and _order_key(dp_type, value) > _order_key(dp_type, maximum):
        raise InvalidValue("maximum", f"must be <= {maximum}")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise InvalidValue("pattern", f"must match the pattern {pattern}")


def typed_value(
    dp_type: str,
    raw: Any,
    *,
    choices: list[str] | None = None,
    minimum: Any = None,
    maximum: Any = None,
    pattern: str | None = None,
) -> TypedValue:
    """Validate a raw value against a definition and return all its forms."""
    value = canonical(dp_type, raw, choices)
    check_constraints(dp_type, value, minimum=minimum, maximum=maximum, pattern=pattern)
    num, text = sortable_form(dp_type, value)
    return TypedValue(value=value, num=num, text=text)


def text_form(dp_type: str, value: Any) -> str:
    """The canonical text of a value, for CSV export."""
    if value is None:
        return ""
    if dp_type == "boolean":
        return "true" if value else "false"
    return str(value)
