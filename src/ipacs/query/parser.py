"""A recursive-descent parser for the StringQuery grammar (API.md section 6).

    query      := or_expr
    or_expr    := and_expr ("OR" and_expr)*
    and_expr   := not_expr ("AND" not_expr)*
    not_expr   := "NOT" not_expr | "(" or_expr ")" | condition
    condition  := field op literal
                | field "IN" "(" literal ("," literal)* ")"
                | field "IS" ["NOT"] "NULL"
                | field "CONTAINS" string

Each rule is one method, so precedence (NOT > AND > OR) is the call order.
The parser only knows the grammar: whether a field exists or a literal fits
its type is the schema's business (`ipacs.query.schema`).

A query is text from the network, so three caps keep it from costing more
than a query should: its length, how deep parentheses and NOTs nest (so
recursion stays far from Python's limit), and the length of an IN list.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from ipacs.query.ast import And, Comparison, Contains, Field, InList, IsNull, Literal, Node, Not, Operator, Or
from ipacs.query.errors import QueryError
from ipacs.query.lexer import Kind, Token, tokenize

MAX_QUERY_LENGTH = 10_000
MAX_DEPTH = 64
MAX_IN_ITEMS = 1_000
# SQLite refuses expressions nested deeper than 1,000, and a chain of ORs on one datapoint
# compiles to a chain about twice its length: 496 conditions failed (a 500, not a 400)
# while 10,000 characters hold more than 1,000 of them. Half of that leaves a margin.
MAX_CONDITIONS = 250

EXPECTED_OPERATOR = "expected an operator (=, !=, <, <=, >, >=, IN, IS, CONTAINS)"
EXPECTED_LITERAL = "expected a literal: a 'string', a number, true or false"
EXPECTED_CONDITION = "expected a condition (a field name), NOT or '('"


def parse_query(query: str) -> Node:
    """The syntax tree of `query`; raises QueryError (no caret: see `parse`)."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QueryError(f"a query may have at most {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    return _Parser(tokenize(query)).query()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.conditions = 0

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.END:
            self.index += 1
        return token

    @contextmanager
    def nested(self, token: Token) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(
                f"the query nests more than {MAX_DEPTH} levels of parentheses and NOT", token.position
            )
        yield
        self.depth -= 1

    def query(self) -> Node:
        if self.peek().kind is Kind.END:
            raise QueryError(f"empty query: {EXPECTED_CONDITION}", 0)
        node = self.or_expr()
        if self.peek().kind is not Kind.END:
            raise QueryError("expected AND, OR or the end of the query", self.peek().position)
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        position = self.peek().position
        while self.peek().is_keyword("OR"):
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Or(tuple(operands), position)

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        position = self.peek().position
        while self.peek().is_keyword("AND"):
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else And(tuple(operands), position)

    def not_expr(self) -> Node:
        token = self.peek()
        if token.is_keyword("NOT"):
            self.advance()
            with self.nested(token):
                return Not(self.not_expr(), token.position)
        if token.kind is Kind.LPAREN:
            self.advance()
            with self.nested(token):
                node = self.or_expr()
            if self.peek().kind is not Kind.RPAREN:
                raise QueryError(
                    f"expected AND, OR or ')' to close the '(' at position {token.position}",
                    self.peek().position,
                )
            self.advance()
            return node
        return self.condition()

    def condition(self) -> Node:
        name = self.peek()
        if name.kind is not Kind.NAME:
            raise QueryError(_expected_condition(name), name.position)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise QueryError(f"a query may have at most {MAX_CONDITIONS} conditions", name.position)
        self.advance()
        field = Field(name.text, name.position)
        token = self.advance()
        match token:
            case Token(kind=Kind.OPERATOR):
                # The lexer makes OPERATOR tokens only from the six operators.
                return Comparison(field, cast(Operator, token.text), self.literal(), token.position)
            case Token(kind=Kind.KEYWORD, text="IN"):
                return InList(field, self.in_list(), token.position)
            case Token(kind=Kind.KEYWORD, text="IS"):
                return IsNull(field, self.is_null(), token.position)
            case Token(kind=Kind.KEYWORD, text="CONTAINS"):
                return Contains(field, self.string(), token.position)
            case Token(kind=Kind.KEYWORD, text="NOT"):
                raise QueryError(
                    f"{EXPECTED_OPERATOR}; to negate a condition, put NOT before it: NOT {name.text} ...",
                    token.position,
                )
            case _:
                raise QueryError(EXPECTED_OPERATOR, token.position)

    def literal(self) -> Literal:
        token = self.advance()
        match token:
            case Token(kind=Kind.STRING):
                return Literal(token.text, token.position)
            case Token(kind=Kind.NUMBER):
                number = float(token.text) if "." in token.text else int(token.text)
                return Literal(number, token.position)
            case Token(kind=Kind.KEYWORD, text="TRUE" | "FALSE"):
                return Literal(token.text == "TRUE", token.position)
            case Token(kind=Kind.KEYWORD, text="NULL"):
                raise QueryError(
                    f"{EXPECTED_LITERAL}; to test for a missing value, use IS NULL", token.position
                )
            case _:
                raise QueryError(EXPECTED_LITERAL, token.position)

    def string(self) -> Literal:
        token = self.advance()
        if token.kind is not Kind.STRING:
            raise QueryError("expected a 'string' after CONTAINS", token.position)
        return Literal(token.text, token.position)

    def in_list(self) -> tuple[Literal, ...]:
        if self.peek().kind is not Kind.LPAREN:
            raise QueryError("expected '(' and a list of literals after IN", self.peek().position)
        self.advance()
        values = [self.literal()]
        while self.peek().kind is Kind.COMMA:
            self.advance()
            if len(values) == MAX_IN_ITEMS:
                raise QueryError(f"an IN list may have at most {MAX_IN_ITEMS} items", self.peek().position)
            values.append(self.literal())
        if self.peek().kind is not Kind.RPAREN:
            raise QueryError("expected ',' or ')' in the IN list", self.peek().position)
        self.advance()
        return tuple(values)

    def is_null(self) -> bool:
        negated = self.peek().is_keyword("NOT")
        if negated:
            self.advance()
        if not self.peek().is_keyword("NULL"):
            raise QueryError("expected NULL or NOT NULL after IS", self.peek().position)
        self.advance()
        return negated


def _expected_condition(token: Token) -> str:
    match token:
        case Token(kind=Kind.END):
            return f"{EXPECTED_CONDITION}, but the query ended"
        case Token(kind=Kind.KEYWORD):
            return f"{EXPECTED_CONDITION}; {token.text} is a keyword, not a field name"
        case _:
            return EXPECTED_CONDITION
