"""The DICOM JSON model (PS3.18 Annex F): building attributes from our index, and
converting file headers with pydicom with bulk data left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

DICOM_JSON = "application/dicom+json"
# Binary values larger than this are bulk data: left out of metadata responses.
BULK_DATA_THRESHOLD = 1024
_BULK = "ipacs:omitted"

JsonAttributes = dict[str, dict[str, Any]]


def tag_of(name: str) -> int | None:
    """The tag for a keyword (`PatientID`) or an 8-digit hex tag (`00100020`), else None."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    return tag_for_keyword(name)


def tag_key(tag: int) -> str:
    return f"{tag:08X}"


def keyword_of(tag: int) -> str:
    return keyword_for_tag(tag) or tag_key(tag)


def person_name(text: str) -> dict[str, str]:
    """A PN value: `Alphabetic[=Ideographic[=Phonetic]]` split into its groups."""
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), text.split("="), strict=False))
    return {k: v for k, v in groups.items() if v}


def dicom_date(value: date | None) -> str | None:
    return value.strftime("%Y%m%d") if value else None


def dicom_time(value: str | None) -> str | None:
    """Our stored `HH:MM:SS[.ffffff]` back to DICOM TM `HHMMSS[.ffffff]`."""
    return value.replace(":", "") if value else None


class Attributes:
    """A DICOM JSON object built attribute by attribute, by keyword."""

    def __init__(self) -> None:
        self._items: JsonAttributes = {}

    def set(self, keyword: str, *values: Any) -> Attributes:
        """Add an attribute; None values are dropped, no values gives an empty attribute."""
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        vr = dictionary_VR(tag)
        present = [v for v in values if v is not None and v != ""]
        if vr == "PN":
            present = [person_name(str(v)) for v in present]
        element: dict[str, Any] = {"vr": vr}
        if present:
            element["Value"] = present
        self._items[tag_key(tag)] = element
        return self

    def sequence(self, keyword: str, items: Iterable[Attributes]) -> Attributes:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(keyword)
        values = [item.as_json() for item in items]
        self._items[tag_key(tag)] = {"vr": "SQ", "Value": values} if values else {"vr": "SQ"}
        return self

    def update(self, attributes: JsonAttributes) -> Attributes:
        self._items.update(attributes)
        return self

    def has(self, tag: int) -> bool:
        return tag_key(tag) in self._items

    def as_json(self) -> JsonAttributes:
        return dict(sorted(self._items.items()))


def _strip_bulk(attributes: JsonAttributes) -> JsonAttributes:
    kept: JsonAttributes = {}
    for key, element in attributes.items():
        if element.get("BulkDataURI") == _BULK:
            continue
        if element.get("vr") == "SQ" and "Value" in element:
            element = {**element, "Value": [_strip_bulk(item) for item in element["Value"]]}
        kept[key] = element
    return dict(sorted(kept.items()))


def dataset_json(ds: Dataset) -> JsonAttributes:
    """A header as DICOM JSON; binary values over the threshold are left out."""
    converted = ds.to_json_dict(BULK_DATA_THRESHOLD, lambda _element: _BULK)
    return _strip_bulk(converted)


def element_json(element: DataElement) -> dict[str, Any] | None:
    """One element as DICOM JSON, or None when it is bulk data."""
    converted = element.to_json_dict(lambda _element: _BULK, BULK_DATA_THRESHOLD)
    stripped = _strip_bulk({"x": converted})
    return stripped.get("x")
