"""The StringQuery lexer and parser, table-driven: text -> tree, and text -> error position."""

from __future__ import annotations

import pytest

from ipacs.errors import InvalidQuery
from ipacs.query import MAX_CONDITIONS, MAX_DEPTH, MAX_IN_ITEMS, MAX_QUERY_LENGTH, parse
from ipacs.query.ast import And, Comparison, Contains, Field, InList, IsNull, Literal, Node, Not, Or
from ipacs.query.lexer import Kind, tokenize


def dump(node: Node | Field | Literal) -> str:
    """A compact rendering with every position, e.g. `(>=@4 age@0 18@7)`."""
    match node:
        case Field(name=name, position=pos):
            return f"{name}@{pos}"
        case Literal(value=value, position=pos):
            return f"{value!r}@{pos}"
        case Comparison(field=field, op=op, value=value, position=pos):
            return f"({op}@{pos} {dump(field)} {dump(value)})"
        case InList(field=field, values=values, position=pos):
            return f"(IN@{pos} {dump(field)} " + " ".join(dump(v) for v in values) + ")"
        case IsNull(field=field, negated=negated, position=pos):
            return f"(IS {'NOT ' if negated else ''}NULL@{pos} {dump(field)})"
        case Contains(field=field, value=value, position=pos):
            return f"(CONTAINS@{pos} {dump(field)} {dump(value)})"
        case Not(operand=operand, position=pos):
            return f"(NOT@{pos} {dump(operand)})"
        case And(operands=operands, position=pos):
            return f"(AND@{pos} " + " ".join(dump(o) for o in operands) + ")"
        case Or(operands=operands, position=pos):
            return f"(OR@{pos} " + " ".join(dump(o) for o in operands) + ")"
    raise AssertionError(node)


TREES = [
    # every operator
    ("age = 18", "(=@4 age@0 18@6)"),
    ("age != 18", "(!=@4 age@0 18@7)"),
    ("age < 18", "(<@4 age@0 18@6)"),
    ("age <= 18", "(<=@4 age@0 18@7)"),
    ("age > 18", "(>@4 age@0 18@6)"),
    ("age >= 18", "(>=@4 age@0 18@7)"),
    ("age>=18", "(>=@3 age@0 18@5)"),
    ("arm IN ('A', 'B')", "(IN@4 arm@0 'A'@8 'B'@13)"),
    ("arm in ('A')", "(IN@4 arm@0 'A'@8)"),
    ("age IN (1,2,3)", "(IN@4 age@0 1@8 2@10 3@12)"),
    ("x IN (  'a' ,  \"b\"  )", "(IN@2 x@0 'a'@8 'b'@15)"),
    ("arm IS NULL", "(IS NULL@4 arm@0)"),
    ("arm is not null", "(IS NOT NULL@4 arm@0)"),
    ("note CONTAINS 'x%'", "(CONTAINS@5 note@0 'x%'@14)"),
    ('note contains "50%_off"', "(CONTAINS@5 note@0 '50%_off'@14)"),
    # numbers and booleans
    ("weight = 70.5", "(=@7 weight@0 70.5@9)"),
    ("delta = -3", "(=@6 delta@0 -3@8)"),
    ("delta > -0.25", "(>@6 delta@0 -0.25@8)"),
    ("x != -5.5", "(!=@2 x@0 -5.5@5)"),
    ("x = 007", "(=@2 x@0 7@4)"),
    ("x = 1.50", "(=@2 x@0 1.5@4)"),
    ("x = -0", "(=@2 x@0 0@4)"),
    ("flag = true", "(=@5 flag@0 True@7)"),
    ("flag = FALSE", "(=@5 flag@0 False@7)"),
    ("flag = True", "(=@5 flag@0 True@7)"),
    # quoting
    ("arm = 'A'", "(=@4 arm@0 'A'@6)"),
    ('arm = "A"', "(=@4 arm@0 'A'@6)"),
    ("name = 'it''s'", '(=@5 name@0 "it\'s"@7)'),
    ('name = "say ""hi"""', "(=@5 name@0 'say \"hi\"'@7)"),
    ('name = "it\'s"', '(=@5 name@0 "it\'s"@7)'),
    ("name = 'say \"hi\"'", "(=@5 name@0 'say \"hi\"'@7)"),
    ("name = ''", "(=@5 name@0 ''@7)"),
    ("name = ''''", '(=@5 name@0 "\'"@7)'),
    ("name = 'a\\b'", "(=@5 name@0 'a\\\\b'@7)"),
    ("name = 'two\nlines'", "(=@5 name@0 'two\\nlines'@7)"),
    ("name = 'x; DROP TABLE patients; --'", "(=@5 name@0 'x; DROP TABLE patients; --'@7)"),
    # unicode: positions count characters, not bytes
    ("name = 'Zoë 東京 🙂'", "(=@5 name@0 'Zoë 東京 🙂'@7)"),
    ("name = 'é' AND x = 1", "(AND@11 (=@5 name@0 'é'@7) (=@17 x@15 1@19))"),
    ("name = '東京' OR x = 1", "(OR@12 (=@5 name@0 '東京'@7) (=@17 x@15 1@19))"),
    # fields
    ("patient.sex = 'F'", "(=@12 patient.sex@0 'F'@14)"),
    ("Patient.Sex = 'F'", "(=@12 Patient.Sex@0 'F'@14)"),
    ("study.modalities = 'CT'", "(=@17 study.modalities@0 'CT'@19)"),
    ("android = 1 AND order = 2", "(AND@12 (=@8 android@0 1@10) (=@22 order@16 2@24))"),
    ("notes CONTAINS 'x'", "(CONTAINS@6 notes@0 'x'@15)"),
    ("  age\t>=\n18  ", "(>=@6 age@2 18@9)"),
    # precedence: NOT > AND > OR
    ("a = 1 AND b = 2 AND c = 3", "(AND@6 (=@2 a@0 1@4) (=@12 b@10 2@14) (=@22 c@20 3@24))"),
    ("a = 1 OR b = 2 OR c = 3", "(OR@6 (=@2 a@0 1@4) (=@11 b@9 2@13) (=@20 c@18 3@22))"),
    ("a = 1 OR b = 2 AND c = 3", "(OR@6 (=@2 a@0 1@4) (AND@15 (=@11 b@9 2@13) (=@21 c@19 3@23)))"),
    ("a = 1 AND b = 2 OR c = 3", "(OR@16 (AND@6 (=@2 a@0 1@4) (=@12 b@10 2@14)) (=@21 c@19 3@23))"),
    ("NOT a = 1", "(NOT@0 (=@6 a@4 1@8))"),
    ("NOT a = 1 AND b = 2", "(AND@10 (NOT@0 (=@6 a@4 1@8)) (=@16 b@14 2@18))"),
    ("not a = 1 or b = 2", "(OR@10 (NOT@0 (=@6 a@4 1@8)) (=@15 b@13 2@17))"),
    ("NOT NOT a = 1", "(NOT@0 (NOT@4 (=@10 a@8 1@12)))"),
    ("a IS NULL OR b IS NOT NULL", "(OR@10 (IS NULL@2 a@0) (IS NOT NULL@15 b@13))"),
    (
        "NOT a IN (1) AND NOT b CONTAINS 'z'",
        "(AND@13 (NOT@0 (IN@6 a@4 1@10)) (NOT@17 (CONTAINS@23 b@21 'z'@32)))",
    ),
    # parentheses and nesting
    ("(a = 1 OR b = 2) AND c = 3", "(AND@17 (OR@7 (=@3 a@1 1@5) (=@12 b@10 2@14)) (=@23 c@21 3@25))"),
    ("NOT (a = 1 AND b = 2)", "(NOT@0 (AND@11 (=@7 a@5 1@9) (=@17 b@15 2@19)))"),
    ("((a = 1))", "(=@4 a@2 1@6)"),
    ("(a = 1) AND ((b = 2) OR (c = 3))", "(AND@8 (=@3 a@1 1@5) (OR@21 (=@16 b@14 2@18) (=@27 c@25 3@29)))"),
    ("x=1 and(y=2)", "(AND@4 (=@1 x@0 1@2) (=@9 y@8 2@10))"),
    ("x='a'and y=1", "(AND@5 (=@1 x@0 'a'@2) (=@10 y@9 1@11))"),
    # keywords in any case
    ("a = 1 aNd b = 2", "(AND@6 (=@2 a@0 1@4) (=@12 b@10 2@14))"),
    ("a = 1 Or b = 2", "(OR@6 (=@2 a@0 1@4) (=@11 b@9 2@13))"),
    ("nOt a iS nOt NuLl", "(NOT@0 (IS NOT NULL@6 a@4))"),
    ("a CoNtAiNs 'x'", "(CONTAINS@2 a@0 'x'@11)"),
    (
        "age >= 18 AND patient.sex = 'F' AND (arm IN ('A', 'B') OR NOT responder = true) "
        "AND study.study_date >= '2024-01-01'",
        "(AND@10 (>=@4 age@0 18@7) (=@26 patient.sex@14 'F'@28) "
        "(OR@55 (IN@41 arm@37 'A'@45 'B'@50) (NOT@58 (=@72 responder@62 True@74))) "
        "(>=@101 study.study_date@84 '2024-01-01'@104))",
    ),
]


@pytest.mark.parametrize(("text", "tree"), TREES)
def test_parses_to(text: str, tree: str) -> None:
    assert dump(parse(text)) == tree


ERRORS = [
    ("", 0, "empty query"),
    ("   ", 0, "empty query"),
    ("age", 3, "expected an operator (=, !=, <, <=, >, >=, IN, IS, CONTAINS)"),
    ("age 18", 4, "expected an operator"),
    ("age == 18", 5, "expected a literal"),
    ("age =", 5, "expected a literal"),
    ("age = ", 6, "expected a literal"),
    ("age >= 18 AND", 13, "but the query ended"),
    ("NOT", 3, "but the query ended"),
    ("AND age = 1", 0, "AND is a keyword"),
    ("in = 1", 0, "IN is a keyword"),
    ("age = 1 age = 2", 8, "expected AND, OR or the end of the query"),
    ("age = TRUE = 1", 11, "expected AND, OR or the end of the query"),
    ("(age = 1", 8, "expected AND, OR or ')' to close the '(' at position 0"),
    ("age = 1)", 7, "expected AND, OR or the end of the query"),
    ("(age = 1))", 9, "expected AND, OR or the end of the query"),
    ("()", 1, "expected a condition"),
    ("age = 1 AND (arm = 'A' OR)", 25, "expected a condition"),
    ("arm IN 'A'", 7, "expected '('"),
    ("arm IN ()", 8, "expected a literal"),
    ("arm IN ('A' 'B')", 12, "expected ',' or ')'"),
    ("arm IN ('A',)", 12, "expected a literal"),
    ("arm IN ('A'", 11, "expected ',' or ')'"),
    ("arm IS 'A'", 7, "expected NULL or NOT NULL"),
    ("arm IS NOT 'A'", 11, "expected NULL or NOT NULL"),
    ("arm = NULL", 6, "use IS NULL"),
    ("arm CONTAINS 5", 13, "expected a 'string' after CONTAINS"),
    ("arm NOT IN ('A')", 4, "put NOT before it"),
    ("arm = 'A", 6, "unterminated string: expected a closing '"),
    ("arm = \"A'", 6, 'unterminated string: expected a closing "'),
    ("arm = 'it''s", 6, "unterminated string"),
    ("age = 18abc", 8, "after a number"),
    ("age = 1.", 7, "after a number"),
    ("age = 1.2.3", 9, "after a number"),
    ("patient. = 1", 7, "after a name"),
    ("age = #", 6, "unexpected character '#'"),
    ("age ! 1", 4, "unexpected character '!'"),
    ("age = - 1", 6, "unexpected character '-'"),
    ("âge = 1", 0, "unexpected character 'â'"),
    ("name = 'é' AND", 14, "but the query ended"),
    ("age; DROP TABLE patients", 3, "unexpected character ';'"),
    ("age = 1 -- comment", 8, "unexpected character '-'"),
    ("x = 1" + "9" * 101, 4, "at most 100 digits"),
]


@pytest.mark.parametrize(("text", "position", "message"), ERRORS)
def test_error_at(text: str, position: int, message: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse(text)
    assert caught.value.position == position
    assert message in caught.value.details[0]["message"]


def test_error_carries_details_and_a_caret() -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse("age >= 18 AND arm IS 'A'")
    err = caught.value
    assert err.details == [{"position": 21, "message": "expected NULL or NOT NULL after IS"}]
    assert err.message.endswith("age >= 18 AND arm IS 'A'\n" + " " * 21 + "^")


def test_nesting_up_to_the_cap_parses() -> None:
    deep = "(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH
    assert dump(parse(deep)) == f"(=@{MAX_DEPTH + 2} a@{MAX_DEPTH} 1@{MAX_DEPTH + 4})"
    nots = "NOT " * MAX_DEPTH + "a = 1"
    assert dump(parse(nots)).count("NOT@") == MAX_DEPTH


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1), MAX_DEPTH),
        ("NOT " * (MAX_DEPTH + 1) + "a = 1", 4 * MAX_DEPTH),
        ("(" * 4000 + "a = 1" + ")" * 4000, MAX_DEPTH),  # never a RecursionError
        ("NOT (" * 1000 + "a = 1" + ")" * 1000, 5 * (MAX_DEPTH // 2)),
    ],
)
def test_nesting_beyond_the_cap_is_an_error(text: str, position: int) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse(text)
    assert caught.value.position == position
    assert "nests more than" in caught.value.details[0]["message"]


def test_long_chains_do_not_recurse() -> None:
    text = " OR ".join(f"a = {i}" for i in range(MAX_CONDITIONS))
    assert len(text) < MAX_QUERY_LENGTH
    tree = parse(text)
    assert isinstance(tree, Or)
    assert len(tree.operands) == MAX_CONDITIONS


def test_condition_count_cap() -> None:
    text = " OR ".join(f"a = {i}" for i in range(MAX_CONDITIONS + 1))
    with pytest.raises(InvalidQuery) as caught:
        parse(text)
    assert caught.value.position == text.rindex("a =")
    assert f"at most {MAX_CONDITIONS} conditions" in caught.value.details[0]["message"]


def test_query_length_cap() -> None:
    text = "a = 1" + " " * MAX_QUERY_LENGTH
    with pytest.raises(InvalidQuery) as caught:
        parse(text)
    assert caught.value.position == MAX_QUERY_LENGTH
    parse("a = 1" + " " * (MAX_QUERY_LENGTH - 5))


def test_in_list_cap() -> None:
    items = ",".join("1" for _ in range(MAX_IN_ITEMS))
    assert isinstance(parse(f"a IN ({items})"), InList)
    with pytest.raises(InvalidQuery) as caught:
        parse(f"a IN ({items},2)")
    assert caught.value.position == len(f"a IN ({items},")
    assert "at most 1000 items" in caught.value.details[0]["message"]


def test_tokens_carry_positions_and_upper_case_keywords() -> None:
    tokens = tokenize("NOT patient.sex in ('F', \"M\") and age>=-1.5")
    assert [(t.kind, t.text, t.position) for t in tokens] == [
        (Kind.KEYWORD, "NOT", 0),
        (Kind.NAME, "patient.sex", 4),
        (Kind.KEYWORD, "IN", 16),
        (Kind.LPAREN, "(", 19),
        (Kind.STRING, "F", 20),
        (Kind.COMMA, ",", 23),
        (Kind.STRING, "M", 25),
        (Kind.RPAREN, ")", 28),
        (Kind.KEYWORD, "AND", 30),
        (Kind.NAME, "age", 34),
        (Kind.OPERATOR, ">=", 37),
        (Kind.NUMBER, "-1.5", 39),
        (Kind.END, "", 43),
    ]
