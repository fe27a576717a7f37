"""The error every stage raises: a message and the 0-based position of the fault.

Stages raise `QueryError` without the query text; the public entry points
(`parse`, `compile_query`) turn it into the API's `InvalidQuery`, which adds
the caret display, so that each stage need not carry the text around.
"""

from __future__ import annotations

from ipacs.errors import InvalidQuery


class QueryError(Exception):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def for_query(self, query: str) -> InvalidQuery:
        return InvalidQuery(self.message, self.position, query)
