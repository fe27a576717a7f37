"""LIKE patterns that match user text literally (its % and _ included)."""

from __future__ import annotations

LIKE_ESCAPE = "\\"


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains_pattern(text: str) -> str:
    """A lower-cased `%text%` pattern, for a case-insensitive substring search."""
    return f"%{escape_like(text.lower())}%"
