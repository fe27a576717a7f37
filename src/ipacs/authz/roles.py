"""Project roles, ordered: viewer < user < manager. Stored as their rank."""

from __future__ import annotations

from enum import IntEnum


class Role(IntEnum):
    VIEWER = 1
    USER = 2
    MANAGER = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Role:
        return cls[label.upper()]


# What an administrator is reported as in `my_role`.
ADMIN_ROLE_LABEL = "admin"
ROLE_LABELS = ("viewer", "user", "manager")
