"""The StringQuery language (API.md section 6): tokenize -> parse -> check -> compile.

    schema = QuerySchema(datapoints_that_apply)
    where = compile_query("age >= 18 AND patient.sex = 'F'", schema, "patients")
    session.scalars(select(Patient).where(where))

Every fault raises `ipacs.errors.InvalidQuery` with its 0-based position.
"""

from __future__ import annotations

from ipacs.query.ast import Node
from ipacs.query.compiler import Target, compile_query
from ipacs.query.errors import QueryError
from ipacs.query.parser import MAX_CONDITIONS, MAX_DEPTH, MAX_IN_ITEMS, MAX_QUERY_LENGTH, parse_query
from ipacs.query.schema import ATTRIBUTES, DatapointDefinition, QuerySchema


def parse(text: str) -> Node:
    """The syntax tree of `text`; raises InvalidQuery (with the caret display) on a fault."""
    try:
        return parse_query(text)
    except QueryError as err:
        raise err.for_query(text) from None


__all__ = [
    "ATTRIBUTES",
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "MAX_IN_ITEMS",
    "MAX_QUERY_LENGTH",
    "DatapointDefinition",
    "QuerySchema",
    "Target",
    "compile_query",
    "parse",
]
