"""QIDO-RS query parameters (PS3.18 8.3.4): match keys, `limit`, `offset`, `includefield`.

Parsing only; repository.py turns the matches into SQL. A key may name an
attribute by keyword (`PatientID`) or by tag (`00100020`). Attributes of the
searched level and of the levels above it can be matched (e.g. `PatientName`
when searching series). A real DICOM attribute that iPACS does not index is
ignored and named in a `Warning` header, as PS3.18 asks; a name that is no
DICOM attribute at all is a 400, so a typo never silently widens a search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import Enum, IntEnum

from pydicom.datadict import keyword_for_tag

from ipacs.db.paging import MAX_LIMIT
from ipacs.dicom.dicomweb.json_model import keyword_of, tag_of
from ipacs.errors import InvalidRequest


class Level(IntEnum):
    STUDY = 0
    SERIES = 1
    INSTANCE = 2


class Kind(Enum):
    UID = "uid"  # list matching: comma (or backslash) separated
    TEXT = "text"  # single value, `*` and `?` wildcards, case-sensitive
    TEXT_CI = "text_ci"  # the same, case-insensitive (names, descriptions)
    CODES = "codes"  # exact codes, a list (Modality)
    MODALITIES = "modalities"  # any of the listed codes is among the study's modalities
    DATE = "date"  # YYYYMMDD, or a range A-B, -B, A-
    NUMBER = "number"


@dataclass(frozen=True)
class Key:
    keyword: str
    level: Level
    kind: Kind


_KEYS = (
    Key("StudyInstanceUID", Level.STUDY, Kind.UID),
    Key("PatientID", Level.STUDY, Kind.TEXT),
    Key("PatientName", Level.STUDY, Kind.TEXT_CI),
    Key("PatientBirthDate", Level.STUDY, Kind.DATE),
    Key("PatientSex", Level.STUDY, Kind.CODES),
    Key("StudyDate", Level.STUDY, Kind.DATE),
    Key("AccessionNumber", Level.STUDY, Kind.TEXT),
    Key("StudyDescription", Level.STUDY, Kind.TEXT_CI),
    Key("ModalitiesInStudy", Level.STUDY, Kind.MODALITIES),
    Key("SeriesInstanceUID", Level.SERIES, Kind.UID),
    Key("Modality", Level.SERIES, Kind.CODES),
    Key("SeriesNumber", Level.SERIES, Kind.NUMBER),
    Key("SeriesDescription", Level.SERIES, Kind.TEXT_CI),
    Key("BodyPartExamined", Level.SERIES, Kind.CODES),
    Key("SOPInstanceUID", Level.INSTANCE, Kind.UID),
    Key("SOPClassUID", Level.INSTANCE, Kind.UID),
    Key("InstanceNumber", Level.INSTANCE, Kind.NUMBER),
)
MATCH_KEYS = {key.keyword: key for key in _KEYS}
MAX_OFFSET = 2**31 - 1
PARAMETERS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_DATE = re.compile(r"^\d{8}$")
_LIST_SEPARATOR = re.compile(r"[,\\]")


@dataclass(frozen=True)
class Match:
    key: Key
    values: tuple[str, ...] = ()
    start: date | None = None
    end: date | None = None
    number: int | None = None


@dataclass(frozen=True)
class QidoQuery:
    matches: tuple[Match, ...]
    limit: int
    offset: int
    # Tags asked for with `includefield` (beyond what every result carries).
    include: frozenset[int]
    warnings: tuple[str, ...]


def _bad(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid QIDO-RS query: {field}: {message}", [{"field": field, "message": message}]
    )


def _parse_date(field: str, text: str) -> date:
    if not _DATE.match(text):
        raise _bad(field, f"{text!r} is not a date YYYYMMDD")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError as exc:
        raise _bad(field, f"{text!r} is not a valid date") from exc


def _date_match(key: Key, field: str, value: str) -> Match:
    first, dash, last = value.partition("-")
    if not dash:
        day = _parse_date(field, value)
        return Match(key, start=day, end=day)
    if not first and not last:
        raise _bad(field, "a range needs a start, an end or both")
    start = _parse_date(field, first) if first else None
    end = _parse_date(field, last) if last else None
    if start and end and start > end:
        raise _bad(field, "the range ends before it starts")
    return Match(key, start=start, end=end)


def _match(key: Key, field: str, value: str) -> Match | None:
    """The match for one key, or None for universal matching (empty or `*`)."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if "\x00" in value:
        raise _bad(field, "holds a NUL character")
    match key.kind:
        case Kind.DATE:
            return _date_match(key, field, value)
        case Kind.NUMBER:
            try:
                return Match(key, number=int(value))
            except ValueError as exc:
                raise _bad(field, f"{value!r} is not an integer") from exc
        case Kind.UID | Kind.CODES | Kind.MODALITIES:
            values = tuple(v.strip() for v in _LIST_SEPARATOR.split(value) if v.strip())
            if key.kind is not Kind.UID:
                values = tuple(v.upper() for v in values)
            return Match(key, values=values) if values else None
        case Kind.TEXT | Kind.TEXT_CI:
            return Match(key, values=(value,))


def _include(field: str, value: str) -> set[int]:
    tags: set[int] = set()
    for name in (n.strip() for n in value.split(",")):
        if not name or name == "all":
            continue
        tag = tag_of(name)
        if tag is None:
            raise _bad(field, f"{name!r} is not a DICOM attribute keyword or tag")
        tags.add(tag)
    return tags


def _bounded(field: str, value: str, default: int, maximum: int | None) -> int:
    try:
        number = int(value) if value.strip() else default
    except ValueError as exc:
        raise _bad(field, f"{value!r} is not an integer") from exc
    if number < 0:
        raise _bad(field, "must not be negative")
    return min(number, maximum) if maximum is not None else number


def parse_query(items: list[tuple[str, str]], level: Level) -> QidoQuery:
    """Parse a QIDO-RS query string (as key/value pairs) for a search at `level`."""
    matches: dict[str, Match | None] = {}
    include: set[int] = set()
    ignored: list[str] = []
    limit, offset = MAX_LIMIT, 0
    warnings: list[str] = []
    for name, value in items:
        if name == "limit":
            limit = _bounded(name, value, MAX_LIMIT, MAX_LIMIT) or MAX_LIMIT
        elif name == "offset":
            offset = _bounded(name, value, 0, None)
            if offset > MAX_OFFSET:
                raise _bad(name, f"must be at most {MAX_OFFSET}")
        elif name == "includefield":
            include |= _include(name, value)
        elif name == "fuzzymatching":
            if value.strip().lower() == "true":
                warnings.append("fuzzymatching is not supported: literal matching was used")
        elif name.startswith("_"):
            continue  # a client's cache buster (`_=1712345678`)
        elif "." in name:
            ignored.append(name)  # a sequence path: iPACS does not match inside sequences
        else:
            tag = tag_of(name)
            if tag is None:
                raise _bad(name, "not a query parameter nor a DICOM attribute keyword or tag")
            keyword = keyword_for_tag(tag) or name
            key = MATCH_KEYS.get(keyword)
            if key is None or key.level > level:
                ignored.append(keyword_of(tag))
                continue
            if keyword in matches:
                raise _bad(name, "given more than once")
            matches[keyword] = _match(key, name, value)
    if ignored:
        warnings.append(f"The following parameters are not supported: {', '.join(ignored)}")
    return QidoQuery(
        matches=tuple(m for m in matches.values() if m is not None),
        limit=limit,
        offset=offset,
        include=frozenset(include),
        warnings=tuple(warnings),
    )
