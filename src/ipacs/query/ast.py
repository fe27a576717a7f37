"""The syntax tree of a StringQuery: frozen dataclasses, walked with `match`.

Every node carries the 0-based position of the token that makes it: a
field's or a literal's first character, a condition's operator keyword or
symbol (`=`, `IN`, `IS`, `CONTAINS`), the `NOT`, and the first `AND` / `OR`
of a chain. Errors about a node point there.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

Operator = typing.Literal["=", "!=", "<", "<=", ">", ">="]
ORDERING_OPERATORS: tuple[Operator, ...] = ("<", "<=", ">", ">=")
# bool before int in any `match`: True is an int to Python.
Value = str | bool | int | float


@dataclass(frozen=True)
class Field:
    name: str  # as written, e.g. "Arm" or "patient.sex"
    position: int


@dataclass(frozen=True)
class Literal:
    value: Value  # int when written without a decimal point, float when with one
    position: int


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: Operator
    value: Literal
    position: int


@dataclass(frozen=True)
class InList:
    field: Field
    values: tuple[Literal, ...]
    position: int


@dataclass(frozen=True)
class IsNull:
    field: Field
    negated: bool  # IS NOT NULL
    position: int


@dataclass(frozen=True)
class Contains:
    field: Field
    value: Literal  # always a string
    position: int


@dataclass(frozen=True)
class Not:
    operand: Node
    position: int


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]  # two or more, as written in one chain
    position: int


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]
    position: int


Condition = Comparison | InList | IsNull | Contains
Node = Or | And | Not | Condition
