"""What a query may name: the datapoints that apply in a project, and the built-in attributes.

Datapoints are found through this schema by name (case-insensitively, as
their uniqueness is defined), never through `getattr` on a model, so a
query can name nothing but what is listed here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import Column
from sqlalchemy.orm import QueryableAttribute

from ipacs.datapoints.values import ORDERED_TYPES
from ipacs.models import Patient, Study
from ipacs.query.ast import Field
from ipacs.query.errors import QueryError

# A study's modalities are a list; only study.modalities has this type.
MODALITIES = "modalities"
TEXT_LIKE_TYPES = ("string", "choice", MODALITIES)
SEX_CHOICES = ("M", "F", "O")


class DatapointDefinition(Protocol):
    """What the schema needs of a datapoint definition (the `Datapoint` model has it)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def choices(self) -> Sequence[str] | None: ...


@dataclass(frozen=True)
class DatapointField:
    name: str
    type: str
    # Sibling subprojects may each define a datapoint of the same name; a
    # search over their parent means all of them.
    ids: tuple[int, ...]
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AttributeField:
    name: str  # e.g. "patient.sex"
    entity: Literal["patient", "study"]
    column: QueryableAttribute[Any]
    type: str
    choices: tuple[str, ...] | None = None

    @property
    def nullable(self) -> bool:
        column = self.column.expression
        return not isinstance(column, Column) or bool(column.nullable)


SchemaField = DatapointField | AttributeField


def is_ordered(field: SchemaField) -> bool:
    return field.type in ORDERED_TYPES


def is_text_like(field: SchemaField) -> bool:
    return field.type in TEXT_LIKE_TYPES


def _attributes() -> list[AttributeField]:
    def patient(name: str, column: QueryableAttribute[Any], kind: str, **kw: Any) -> AttributeField:
        return AttributeField(f"patient.{name}", "patient", column, kind, **kw)

    def study(name: str, column: QueryableAttribute[Any], kind: str) -> AttributeField:
        return AttributeField(f"study.{name}", "study", column, kind)

    return [
        patient("patient_id", Patient.patient_id, "string"),
        patient("patient_name", Patient.patient_name, "string"),
        patient("birth_date", Patient.birth_date, "date"),
        patient("sex", Patient.sex, "choice", choices=SEX_CHOICES),
        patient("created_at", Patient.created_at, "datetime"),
        patient("updated_at", Patient.updated_at, "datetime"),
        study("study_instance_uid", Study.study_instance_uid, "string"),
        study("accession_number", Study.accession_number, "string"),
        study("description", Study.description, "string"),
        study("visit", Study.visit, "string"),
        study("status", Study.status, "string"),
        study("study_time", Study.study_time, "string"),
        study("study_date", Study.study_date, "date"),
        study("modalities", Study.modalities, MODALITIES),
        study("series_count", Study.series_count, "integer"),
        study("instance_count", Study.instance_count, "integer"),
        study("size_bytes", Study.size_bytes, "integer"),
        study("created_at", Study.created_at, "datetime"),
    ]


ATTRIBUTES: tuple[AttributeField, ...] = tuple(_attributes())


class QuerySchema:
    """The fields of one search: the datapoints that apply plus the built-in attributes."""

    def __init__(self, datapoints: Iterable[DatapointDefinition] = ()) -> None:
        by_key: dict[str, list[DatapointDefinition]] = {}
        for definition in datapoints:
            by_key.setdefault(definition.name.lower(), []).append(definition)
        self._fields: dict[str, SchemaField] = {attr.name.lower(): attr for attr in ATTRIBUTES}
        self._conflicts: dict[str, str] = {}
        for key, definitions in by_key.items():
            types = sorted({d.type for d in definitions})
            if len(types) > 1:
                # Refused when used, not here: one odd sibling must not break every query.
                self._conflicts[key] = (
                    f"datapoint {definitions[0].name} is defined with different types "
                    f"({', '.join(types)}) in the projects searched; search each project on its own"
                )
            else:
                self._fields[key] = _merge(definitions)

    @property
    def names(self) -> list[str]:
        return [field.name for field in self._fields.values()]

    def lookup(self, name: str) -> SchemaField | None:
        return self._fields.get(name.lower())

    def resolve(self, field: Field) -> SchemaField:
        """The field a name stands for, or a QueryError suggesting the closest names."""
        key = field.name.lower()
        if key in self._conflicts:
            raise QueryError(self._conflicts[key], field.position)
        found = self._fields.get(key)
        if found is None:
            raise QueryError(self._unknown(field.name), field.position)
        return found

    def _unknown(self, name: str) -> str:
        close = self.closest(name)
        if close:
            return f"unknown field '{name}'; did you mean {' or '.join(close)}?"
        prefix = name.partition(".")[0].lower()
        if "." in name and prefix in ("patient", "study"):
            known = ", ".join(attr.name for attr in ATTRIBUTES if attr.entity == prefix)
            return f"unknown field '{name}'; expected one of {known}"
        return f"unknown field '{name}': expected a datapoint name, patient.<attribute> or study.<attribute>"

    def closest(self, name: str, limit: int = 3) -> list[str]:
        """Known names that look like `name`, best first (also `sex` -> `patient.sex`)."""
        prefix, _, suffix = name.lower().rpartition(".")
        scored = []
        for candidate in self.names:
            known_prefix, _, known_suffix = candidate.lower().rpartition(".")
            # Attribute names are compared by what follows "patient." / "study.", so
            # that the shared prefix alone makes nothing look close; a missing or
            # wrong prefix costs a little.
            score = difflib.SequenceMatcher(None, suffix, known_suffix).ratio()
            if len(suffix) >= 3 and suffix in known_suffix:
                score = max(score, 0.7)  # "date" -> study_date, "name" -> patient_name
            if prefix != known_prefix:
                score -= 0.05
            if score >= 0.6:
                scored.append((score, candidate))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        return [candidate for _, candidate in scored[:limit]]


def _merge(definitions: list[DatapointDefinition]) -> DatapointField:
    first = definitions[0]
    choices: tuple[str, ...] | None = None
    if first.type == "choice" and all(d.choices is not None for d in definitions):
        # Union in first-seen order: a value valid in any searched project may be asked for.
        choices = tuple(dict.fromkeys(c for d in definitions for c in d.choices or ()))
    return DatapointField(first.name, first.type, tuple(sorted(d.id for d in definitions)), choices)
