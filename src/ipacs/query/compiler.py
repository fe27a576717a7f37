"""Compile a checked StringQuery into one SQLAlchemy boolean expression.

For target "patients" the expression goes in `select(Patient).where(...)`;
for "studies" in `select(Study).join(Patient, Patient.id == Study.patient_id)
.where(...)`. Every literal is a bound parameter.

Semantics (docs/query-language.md states them for users):
- Two-valued logic: every condition is true or false, never SQL NULL, so
  `NOT c` matches exactly what `c` does not. A condition on a missing value is
  false: `arm != 'A'` skips patients without an arm, `NOT arm = 'A'` keeps them.
  Datapoint and study conditions are subquery tests (EXISTS, or IN over
  non-null ids: never NULL); conditions on nullable columns are guarded with
  `col IS NOT NULL AND ...`.
- A datapoint condition asks whether the patient has a value of that
  datapoint satisfying it: a subquery on datapoint_values that the
  (datapoint_id, num_value|text_value, patient_id) indexes answer. For
  studies, the patient is the study's patient.
- For target "patients", study conditions ask "has a study such that": the
  study conditions joined by AND / OR at one level of the query (without a
  NOT between them) are tested together on the same study; NOT applies to the
  patient ("NOT study.modalities = 'CT'": the patient has no CT study).

Planning: a datapoint or study test that every result must pass (a conjunct)
is a *membership*, `subject IN (subquery)`. `CompiledQuery` lists them so
that the caller, who can count (cheaply, capped) how many rows each subquery
yields, picks how the statement runs: driven by its smallest membership, the
others probed per row (`where(driver=i)`), or every membership probed while
walking the subjects in id order (`where(driver=None)`, for a page of a broad
query). Neither database can choose well by itself: their statistics on
num_value / text_value mix every datapoint's values, so PostgreSQL misjudges a
range on one datapoint by orders of magnitude (and SQLite has no range
statistics at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Boolean, ColumnElement, Select, and_, false, func, literal, not_, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from ipacs.datapoints.values import sortable_column
from ipacs.models import DatapointValue, Patient, Study
from ipacs.query.ast import And, Comparison, Condition, Contains, InList, IsNull, Node, Not, Operator, Or
from ipacs.query.check import MODALITY_SEPARATOR, check_contains, check_operator, encode
from ipacs.query.errors import QueryError
from ipacs.query.parser import parse_query
from ipacs.query.schema import MODALITIES, AttributeField, DatapointField, QuerySchema, SchemaField

Target = Literal["patients", "studies"]
Combine = Callable[..., ColumnElement[bool]]
# How a compiled statement runs its memberships: "all" as IN (each database
# plans them), the index of the one that drives (the others probed), or None
# (all probed).
Driver = int | None | Literal["all"]

# The escape character of LIKE patterns; any character works if escaped itself.
LIKE_ESCAPE = "/"


def compile_query(text: str, schema: QuerySchema, target: Target) -> ColumnElement[bool]:
    """The WHERE expression for `text`; raises InvalidQuery with the position of the fault."""
    return CompiledQuery(text, schema, target).where()


@dataclass(frozen=True)
class Membership:
    """A test every result passes: `subject IN (rows)` (rows: one column of patient ids).

    `probe(column)` is the same test for the patient id in `column`: the rows to test
    with EXISTS. `table` is what they read: the datapoint values (each membership under
    an alias of its own) or the studies.
    """

    subject: Any
    rows: Select[Any]
    probe: Callable[[Any], Select[Any]]
    table: Literal["values", "studies"]


class CompiledQuery:
    """A checked query, with its memberships, that compiles to a WHERE expression per driver."""

    def __init__(self, text: str, schema: QuerySchema, target: Target) -> None:
        self.schema = schema
        self.target: Target = target
        try:
            self.tree = parse_query(text)
            compiler = _Compiler(schema, target, "all")
            self._all_in = compiler.node(self.tree, conjunct=True)
        except QueryError as err:
            raise err.for_query(text) from None
        self.memberships = tuple(compiler.memberships)

    def where(self, driver: Driver = "all") -> ColumnElement[bool]:
        """The expression with the memberships run as `driver` says (see the module docstring)."""
        if driver == "all":
            return self._all_in
        return _Compiler(self.schema, self.target, driver, self.memberships).node(self.tree, conjunct=True)


class FewIn(ColumnElement[bool]):
    """`subject IN (rows)` for a subquery known to yield few rows (counted beforehand).

    PostgreSQL gets `subject = ANY(ARRAY(rows))`: the subquery runs once, as an
    init plan, and the subjects are then fetched by index. Written as IN, it
    would be planned from PostgreSQL's estimate of the subquery, which for a
    range of one datapoint's values can be a thousand times too high, and
    then runs as a walk of every patient in id order or a hash of all of them.
    Other databases get the IN (SQLite drives a lookup by id from it).
    """

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a test, not a boolean value to compare with 1
    _traverse_internals = [
        ("subject", InternalTraversal.dp_clauseelement),
        ("rows", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, subject: Any, rows: Select[Any]) -> None:
        self.subject = subject
        self.rows = rows


@compiles(FewIn)
def _few_in(element: FewIn, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.subject.in_(element.rows), **kw)


@compiles(FewIn, "postgresql")
def _few_in_postgresql(element: FewIn, compiler: SQLCompiler, **kw: Any) -> str:
    subject = compiler.process(element.subject, **kw)
    return f"{subject} = ANY(ARRAY{compiler.process(element.rows.scalar_subquery(), **kw)})"


class OfDatapoints(ColumnElement[bool]):
    """`datapoint_id IN (ids)`, written so that SQLite reads it as an IN even for one id.

    `datapoint_id = :id` in a probe that also names the patient is an equality on every
    column of the unique (patient_id, datapoint_id) index, which SQLite then takes at
    once, without weighing the others, and reads the value from the table; as an IN
    (the id twice) it weighs its indexes, and answers an equality test from
    (datapoint_id, num_value | text_value, patient_id) alone. On 1M patients, 'age = 37
    AND ecog = 2 AND responder = true' (7,529 candidates, each probed): 45 -> 28 ms.
    A range test still probes through the unique index: SQLite estimates a range as a
    quarter of the datapoint's values.
    """

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("ids", InternalTraversal.dp_clauseelement_tuple),
    ]

    def __init__(self, column: Any, ids: tuple[int, ...]) -> None:
        self.column = column
        self.ids = tuple(literal(i) for i in ids)


@compiles(OfDatapoints)
def _of_datapoints(element: OfDatapoints, compiler: SQLCompiler, **kw: Any) -> str:
    ids = element.ids if len(element.ids) > 1 else element.ids * 2
    listed = ", ".join(compiler.process(i, **kw) for i in ids)
    return f"{compiler.process(element.column, **kw)} IN ({listed})"


@compiles(OfDatapoints, "postgresql")
def _of_datapoints_postgresql(element: OfDatapoints, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if len(element.ids) == 1:
        return f"{column} = {compiler.process(element.ids[0], **kw)}"
    return f"{column} IN ({', '.join(compiler.process(i, **kw) for i in element.ids)})"


class _Compiler:
    """Walks the tree; `conjunct` is true while every node above is an AND (or the root).

    A condition that must hold for every result (a conjunct) tests membership
    with `subject IN (SELECT patient_id ... )`: SQLite (3.40) runs an EXISTS as
    a correlated probe per outer row, but drives an IN from the range index,
    and PostgreSQL plans both as the same semi-join. Under OR and NOT the
    condition is a correlated EXISTS, which PostgreSQL can hash or probe,
    whereas an IN there may become a scan of the subquery's result per row.
    """

    def __init__(
        self, schema: QuerySchema, target: Target, driver: Driver, known: tuple[Membership, ...] = ()
    ) -> None:
        self.schema = schema
        self.target = target
        self.driver = driver
        self.subject = Patient.id if target == "patients" else Study.patient_id
        self.memberships: list[Membership] = []
        # A planned statement's memberships, found by compiling the "all" form first.
        self.known = known

    def node(self, node: Node, *, conjunct: bool = False, in_study: bool = False) -> ColumnElement[bool]:
        match node:
            case Not(operand=operand):
                return not_(self.node(operand, in_study=in_study))
            case And(operands=operands):
                return self.chain(operands, and_, conjunct=conjunct, in_study=in_study)
            case Or(operands=operands):
                return self.chain(operands, or_, conjunct=conjunct, in_study=in_study)
            case _:
                field = self.schema.resolve(node.field)
                if self.per_study(field) and not in_study:
                    return self.has_study(self.condition(node, field, conjunct=False), conjunct=conjunct)
                return self.condition(node, field, conjunct=conjunct)

    def chain(
        self, operands: tuple[Node, ...], combine: Combine, *, conjunct: bool, in_study: bool
    ) -> ColumnElement[bool]:
        """AND / OR, grouping operands that can share one subquery.

        The operands that only test studies share one "has a study" test. The
        conditions on one datapoint share one subquery too: for OR, "has a value
        < x or has a value > y" is "has a value < x or > y"; for AND it holds
        because a patient has at most one value per datapoint, so "a value >= x
        and a value < y" is "a value in [x, y)", which one index range answers.
        """
        direct: list[ColumnElement[bool]] = []
        per_study: list[ColumnElement[bool]] = []
        per_datapoint: dict[tuple[int, ...], list[ColumnElement[bool]]] = {}
        values: dict[tuple[int, ...], Any] = {}  # the alias each datapoint's subquery reads
        for operand in operands:
            compared = self.compared_datapoint(operand)
            if not in_study and self.only_studies(operand):
                per_study.append(self.node(operand, in_study=True))
            elif compared is not None:
                condition, field = compared
                value = values.setdefault(field.ids, aliased(DatapointValue))
                per_datapoint.setdefault(field.ids, []).append(self.value_test(condition, field, value))
            else:
                direct.append(self.node(operand, conjunct=conjunct and combine is and_, in_study=in_study))
        # A group is a conjunct when the chain is, and is an AND or the group is all of it.
        alone = not direct and len(per_datapoint) + bool(per_study) == 1
        grouped = conjunct and (combine is and_ or alone)
        if per_study:
            direct.append(self.has_study(combine(*per_study), conjunct=grouped))
        for ids, tests in per_datapoint.items():
            direct.append(self.has_value(ids, combine(*tests), values[ids], conjunct=grouped))
        return combine(*direct)

    def compared_datapoint(self, node: Node) -> tuple[Condition, DatapointField] | None:
        """`node` and its datapoint, if it compares a datapoint's value (IS NULL does not)."""
        if isinstance(node, Comparison | InList | Contains):
            field = self.schema.lookup(node.field.name)
            if isinstance(field, DatapointField):
                return node, field
        return None

    def per_study(self, field: SchemaField | None) -> bool:
        return self.target == "patients" and isinstance(field, AttributeField) and field.entity == "study"

    def only_studies(self, node: Node) -> bool:
        """Whether `node` is AND / OR over study conditions only (unknown names: no, so
        that the error about them comes in its turn)."""
        match node:
            case And(operands=operands) | Or(operands=operands):
                return all(self.only_studies(operand) for operand in operands)
            case Not():
                return False
            case _:
                return self.per_study(self.schema.lookup(node.field.name))

    def has_study(self, test: ColumnElement[bool], *, conjunct: bool) -> ColumnElement[bool]:
        def probe(patient: Any) -> Select[Any]:
            # correlate_except: the inner Study is always its own, even if the
            # caller's query also reads studies.
            return select(Study.id).where(Study.patient_id == patient, test).correlate_except(Study)

        if conjunct:
            return self.membership(Patient.id, select(Study.patient_id).where(test), probe, "studies")
        return self.exists(probe(Patient.id))

    def has_value(
        self, ids: tuple[int, ...], test: ColumnElement[bool] | None, value: Any, *, conjunct: bool
    ) -> ColumnElement[bool]:
        """Whether the subject's patient has a value of datapoint `ids` passing `test`, a test
        on `value`: an alias of DatapointValue of its own, so that this test can be probed
        inside another one's subquery."""
        which = OfDatapoints(value.datapoint_id, ids)
        values = select(value.patient_id).where(which)
        if test is not None:
            values = values.where(test)

        def probe(patient: Any) -> Select[Any]:
            return values.where(value.patient_id == patient).correlate_except(value)

        if conjunct:
            return self.membership(self.subject, values, probe, "values")
        return self.exists(probe(self.subject))

    def membership(
        self,
        subject: Any,
        rows: Select[Any],
        probe: Callable[[Any], Select[Any]],
        table: Literal["values", "studies"],
    ) -> ColumnElement[bool]:
        """A conjunct test, written as the driver asks: IN, the driving IN, or a probe.

        The driver's rows take the other memberships' probes, on the patient ids they
        yield: the candidates are narrowed within the indexes before a subject is read
        (the subjects read are then the matches, not every candidate), and those
        memberships are true where they stand. Only a study test stays outside a study
        driver, as both read the studies table unaliased.
        """
        index = len(self.memberships)
        self.memberships.append(Membership(subject, rows, probe, table))
        if self.driver == "all":
            return subject.in_(rows)  # type: ignore[no-any-return]
        if self.driver is None:
            return self.exists(probe(subject))
        if self.driver == index:
            column = rows.selected_columns[0]
            inside = [self.exists(m.probe(column)) for i, m in enumerate(self.known) if self.inside(i)]
            return FewIn(subject, rows.where(*inside))
        return true() if self.inside(index) else self.exists(probe(subject))

    def exists(self, probe: Select[Any]) -> ColumnElement[bool]:
        """EXISTS (probe). In a planned statement, OFFSET 0 keeps PostgreSQL from turning it
        into a join planned from its misjudged estimates: it stays an index probe per row."""
        return (probe if self.driver == "all" else probe.offset(0)).exists()

    def inside(self, index: int) -> bool:
        """Whether membership `index` is tested inside the driver's rows."""
        driver = self.driver
        assert isinstance(driver, int)
        if index == driver:
            return False
        return "values" in (self.known[index].table, self.known[driver].table)

    def condition(self, node: Condition, field: SchemaField, *, conjunct: bool) -> ColumnElement[bool]:
        match field, node:
            case DatapointField(), IsNull(negated=True):
                return self.has_value(field.ids, None, aliased(DatapointValue), conjunct=conjunct)
            case DatapointField(), IsNull():
                return not_(self.has_value(field.ids, None, aliased(DatapointValue), conjunct=False))
            case DatapointField(), _:
                value = aliased(DatapointValue)
                return self.has_value(
                    field.ids, self.value_test(node, field, value), value, conjunct=conjunct
                )
            case AttributeField(type=kind), _ if kind == MODALITIES:
                return modalities_condition(node, field)
            case AttributeField(), _:
                return attribute_condition(node, field)

    def value_test(self, node: Condition, field: DatapointField, value: Any) -> ColumnElement[bool]:
        column = value.num_value if sortable_column(field.type) == "num" else value.text_value
        return column_test(node, field, column)


def attribute_condition(node: Condition, field: AttributeField) -> ColumnElement[bool]:
    column = field.column
    if isinstance(node, IsNull):
        return column.is_not(None) if node.negated else column.is_(None)
    test = column_test(node, field, column)
    # Guarded so that a missing value makes the condition false, not NULL.
    return and_(column.is_not(None), test) if field.nullable else test


def column_test(node: Condition, field: SchemaField, column: Any) -> ColumnElement[bool]:
    """The test on one column holding a single value of the field's type."""
    match node:
        case Comparison(op=op, value=literal_value, position=position):
            check_operator(field, op, position)
            return compare(column, op, encode(field, literal_value))
        case InList(values=values):
            return column.in_([encode(field, item) for item in values])  # type: ignore[no-any-return]
        case Contains(value=text, position=position):
            check_contains(field, position)
            return contains(column, str(text.value))
        case IsNull():
            raise AssertionError("IS NULL is compiled by the caller")


def compare(column: Any, op: Operator, value: Any) -> ColumnElement[bool]:
    match op:
        case "=":
            result = column == value
        case "!=":
            result = column != value
        case "<":
            result = column < value
        case "<=":
            result = column <= value
        case ">":
            result = column > value
        case ">=":
            result = column >= value
    return result  # type: ignore[no-any-return]


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """Case-insensitive substring test; the text's `%`, `_` and escape character match themselves.

    Both sides go through the database's lower(), so they fold alike (SQLite
    folds ASCII letters only, PostgreSQL all letters its locale knows).
    """
    pattern = literal(f"%{escape_like(text)}%")
    return func.lower(column).like(func.lower(pattern), escape=LIKE_ESCAPE)


def escape_like(text: str) -> str:
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def modalities_condition(node: Condition, field: AttributeField) -> ColumnElement[bool]:
    """study.modalities is a list kept as "CT\\MR": `=` means "has this modality"."""
    column = Study.modalities
    present = column != ""
    match node:
        case IsNull(negated=negated):
            return present if negated else column == ""
        case Comparison(op=op, value=value, position=position):
            check_operator(field, op, position)
            has = has_modality(encode(field, value))
            # Like every !=, a study without any modality does not match.
            return has if op == "=" else and_(present, not_(has))
        case InList(values=values):
            return or_(*(has_modality(encode(field, item)) for item in values))
        case Contains(value=text, position=position):
            check_contains(field, position)
            if MODALITY_SEPARATOR in str(text.value):
                # No modality holds the separator; a match would span two of them.
                return false()
            return and_(present, contains(column, str(text.value)))


def has_modality(modality: str) -> ColumnElement[bool]:
    """Case-insensitive: "\\CT\\MR\\" contains "\\ct\\" (modality codes are ASCII)."""
    separator = literal(MODALITY_SEPARATOR)
    listed = func.lower(separator + Study.modalities + separator)
    pattern = literal(f"%{MODALITY_SEPARATOR}{escape_like(modality)}{MODALITY_SEPARATOR}%")
    return listed.like(func.lower(pattern), escape=LIKE_ESCAPE)
