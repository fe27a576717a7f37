"""The authenticated caller, as services see it: plain data, no ORM session attached."""

from __future__ import annotations

from dataclasses import dataclass

from ipacs.models import User


@dataclass(frozen=True, slots=True)
class Caller:
    id: int
    username: str
    full_name: str
    is_admin: bool

    @classmethod
    def from_user(cls, user: User) -> Caller:
        return cls(id=user.id, username=user.username, full_name=user.full_name, is_admin=user.is_admin)
