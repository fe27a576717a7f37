"""Type checking: does an operator suit a field, does a literal fit its type.

A literal that fits is returned in the form the database compares: for a
datapoint its sortable form (the float or text that `values.sortable_form`
stores), for an attribute the Python value of the column's type. Both come
from the same functions that validate stored values, so a query compares
like with like.
"""

from __future__ import annotations

from typing import Any

from ipacs.datapoints.values import InvalidValue, canonical, parse_date, parse_datetime, sortable_form
from ipacs.query.ast import ORDERING_OPERATORS, Literal, Operator
from ipacs.query.errors import QueryError
from ipacs.query.schema import (
    MODALITIES,
    AttributeField,
    DatapointField,
    SchemaField,
    is_ordered,
    is_text_like,
)

MODALITY_SEPARATOR = "\\"

_EXPECTED = {
    "string": "expected a 'string'",
    "integer": "expected a whole number",
    "decimal": "expected a number",
    "boolean": "expected true or false",
    "date": "expected a date 'YYYY-MM-DD'",
    "datetime": "expected a datetime 'YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]'",
    MODALITIES: "expected a modality such as 'CT'",
}


def check_operator(field: SchemaField, op: Operator, position: int) -> None:
    if op in ORDERING_OPERATORS and not is_ordered(field):
        raise QueryError(
            f"'{op}' needs an ordered field (integer, decimal, date or datetime); "
            f"{field.name} is {_described(field)}",
            position,
        )


def check_contains(field: SchemaField, position: int) -> None:
    if not is_text_like(field):
        raise QueryError(
            f"CONTAINS needs a text field (string, choice or study.modalities); "
            f"{field.name} is {_described(field)}",
            position,
        )


def encode(field: SchemaField, literal: Literal) -> Any:
    """The literal as the database compares it, or a QueryError at the literal."""
    value = _canonical(field, literal)
    match field:
        case DatapointField():
            num, text = sortable_form(field.type, value)
            return text if num is None else num
        case AttributeField(type="date"):
            return parse_date(value)
        case AttributeField(type="datetime"):
            return parse_datetime(value)
        case AttributeField():
            return value


def _canonical(field: SchemaField, literal: Literal) -> Any:
    raw = literal.value
    expected = f"{_EXPECTED.get(field.type, 'expected a value')} for {field.name}"
    match field.type, raw:
        case "choice", str() if field.choices is not None and raw not in field.choices:
            raise QueryError(
                f"{raw!r} is not one of the choices of {field.name}: {_choices(field)}", literal.position
            )
        case "choice", str():
            return raw
        case "choice", _:
            raise QueryError(
                f"expected one of the choices of {field.name}: {_choices(field)}", literal.position
            )
        case "boolean", bool():
            return raw
        case "integer" | "decimal", bool():
            raise QueryError(expected, literal.position)
        case "integer", float() if not raw.is_integer():
            raise QueryError(expected, literal.position)
        case "integer" | "decimal", int() | float():
            return _checked(field, raw, literal.position)
        case "modalities", str() if raw and MODALITY_SEPARATOR not in raw:
            return raw
        case "string" | "date" | "datetime", str():
            return _checked(field, raw, literal.position)
        case _:
            raise QueryError(expected, literal.position)


def _checked(field: SchemaField, raw: Any, position: int) -> Any:
    try:
        return canonical(field.type, raw)
    except InvalidValue as exc:
        raise QueryError(f"{exc.message} for {field.name}", position) from None


def _choices(field: SchemaField) -> str:
    return ", ".join(field.choices or ())


def _described(field: SchemaField) -> str:
    if field.type == MODALITIES:
        return "a list of modalities"
    return f"an {field.type}" if field.type == "integer" else f"a {field.type}"
