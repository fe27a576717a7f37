"""Tokens of the StringQuery language, each with its 0-based character position."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from ipacs.query.errors import QueryError

KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "IS", "NULL", "CONTAINS", "TRUE", "FALSE"})
OPERATORS = ("!=", "<=", ">=", "=", "<", ">")  # two-character operators first
# Beyond this a number is a typo or an attack on int() (Python limits int() to 4300 digits).
MAX_NUMBER_DIGITS = 100

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
# What may not follow a number or a name directly ("18abc", "patient.", "1.").
_WORD_CHAR = re.compile(r"[A-Za-z0-9_.]")


class Kind(Enum):
    NAME = "name"
    KEYWORD = "keyword"
    STRING = "string"
    NUMBER = "number"
    OPERATOR = "operator"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end of query"


@dataclass(frozen=True)
class Token:
    kind: Kind
    # NAME: as written; KEYWORD: upper-cased; STRING: unquoted; NUMBER: as written.
    text: str
    position: int

    def is_keyword(self, *words: str) -> bool:
        return self.kind is Kind.KEYWORD and self.text in words


def tokenize(query: str) -> list[Token]:
    """The tokens of `query`, ending with one END token at `len(query)`."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        char = query[pos]
        if char.isspace():
            pos += 1
        elif char in "'\"":
            token, pos = _string(query, pos)
            tokens.append(token)
        elif (number := _NUMBER.match(query, pos)) is not None:
            tokens.append(_number(number))
            pos = _after_word(query, number.end(), "a number")
        elif (name := _NAME.match(query, pos)) is not None:
            tokens.append(_word(name.group(), pos))
            pos = _after_word(query, name.end(), "a name")
        elif char in "(),":
            tokens.append(Token(Kind(char), char, pos))
            pos += 1
        elif (op := next((op for op in OPERATORS if query.startswith(op, pos)), None)) is not None:
            tokens.append(Token(Kind.OPERATOR, op, pos))
            pos += len(op)
        else:
            raise QueryError(f"unexpected character {char!r}", pos)
    tokens.append(Token(Kind.END, "", len(query)))
    return tokens


def _word(word: str, pos: int) -> Token:
    upper = word.upper()
    if upper in KEYWORDS:
        return Token(Kind.KEYWORD, upper, pos)
    return Token(Kind.NAME, word, pos)


def _after_word(query: str, end: int, what: str) -> int:
    """`end`, after checking that the word is not glued to more word characters."""
    if end < len(query) and _WORD_CHAR.match(query, end):
        raise QueryError(f"unexpected character {query[end]!r} after {what}", end)
    return end


def _number(match: re.Match[str]) -> Token:
    digits = match.group().lstrip("-").replace(".", "")
    if len(digits) > MAX_NUMBER_DIGITS:
        raise QueryError(f"a number may have at most {MAX_NUMBER_DIGITS} digits", match.start())
    return Token(Kind.NUMBER, match.group(), match.start())


def _string(query: str, pos: int) -> tuple[Token, int]:
    """A quoted string; the quote character doubled inside stands for itself."""
    quote = query[pos]
    parts: list[str] = []
    cursor = pos + 1
    while True:
        close = query.find(quote, cursor)
        if close < 0:
            raise QueryError(f"unterminated string: expected a closing {quote}", pos)
        parts.append(query[cursor:close])
        if query.startswith(quote, close + 1):
            parts.append(quote)
            cursor = close + 2
        else:
            return Token(Kind.STRING, "".join(parts), pos), close + 1
