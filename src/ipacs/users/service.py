"""Account rules: who may create, change and disable users. Shared by the API and the CLI."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from ipacs.audit import service as audit
from ipacs.auth import sessions
from ipacs.auth.caller import Caller
from ipacs.auth.passwords import MIN_PASSWORD_LENGTH, Passwords
from ipacs.authz.roles import Role
from ipacs.clock import now
from ipacs.db.paging import Page, PageParams
from ipacs.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from ipacs.etags import check_if_match
from ipacs.models import User
from ipacs.users import repository
from ipacs.users.schemas import MeOut, ProjectGrant, UserCreate, UserOut, UserUpdate

AUDITED_FIELDS = ("username", "full_name", "email", "is_admin", "is_active")


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDenied("Only an administrator may manage users")


def _get(session: Session, username: str) -> User:
    user = repository.get_by_username(session, username)
    if user is None:
        raise NotFound(f"No user {username!r}")
    return user


def create_user(session: Session, caller: Caller | None, data: UserCreate, passwords: Passwords) -> User:
    """Create an account. `caller` None means the command line (the operator)."""
    if caller is not None:
        _require_admin(caller)
    if repository.get_by_username(session, data.username) is not None:
        raise Conflict(f"User {data.username!r} already exists")
    user = User(
        username=data.username,
        full_name=data.full_name,
        email=data.email,
        is_admin=data.is_admin,
        password_hash=passwords.hash(data.password),
        creator_id=caller.id if caller else None,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        caller,
        "create",
        "user",
        entity_id=user.id,
        entity_uuid=user.uuid,
        after=audit.snapshot(user, AUDITED_FIELDS),
    )
    return user


def list_users(session: Session, caller: Caller, params: PageParams, search: str | None) -> Page[User]:
    _require_admin(caller)
    return repository.list_users(session, params, search)


def get_user(session: Session, caller: Caller, username: str) -> User:
    if not caller.is_admin and caller.username != username:
        raise PermissionDenied("Only an administrator may read other users")
    return _get(session, username)


def describe_me(session: Session, caller: Caller) -> MeOut:
    user = _get(session, caller.username)
    grants = [
        ProjectGrant(project_id=pid, project_name=name, role=Role(rank).label)
        for pid, name, rank in repository.grants_of(session, user.id)
    ]
    return MeOut(**UserOut.model_validate(user).model_dump(), projects=grants)


def update_user(
    session: Session,
    caller: Caller | None,
    username: str,
    data: UserUpdate,
    passwords: Passwords,
    *,
    if_match: str | None = None,
) -> User:
    """Admins change anything; a user may change its own name, email and password."""
    if caller is not None and not caller.is_admin:
        if caller.username != username:
            raise PermissionDenied("Only an administrator may change other users")
        if data.is_admin is not None or data.is_active is not None:
            raise PermissionDenied("Only an administrator may change is_admin or is_active")
    user = _get(session, username)
    check_if_match(user, if_match)
    if data.current_password is not None and not passwords.verify(user.password_hash, data.current_password):
        raise InvalidRequest(
            "current_password is wrong",
            details=[{"field": "current_password", "message": "does not match"}],
        )
    before = audit.snapshot(user, AUDITED_FIELDS)
    fields = data.model_dump(exclude_unset=True, exclude={"password", "current_password"})
    if user.is_admin and (fields.get("is_admin") is False or fields.get("is_active") is False):
        _refuse_removing_last_admin(session)
    for name, value in fields.items():
        if value is None and name in ("is_admin", "is_active", "full_name"):
            continue
        setattr(user, name, value)
    ends_sessions = data.password is not None or fields.get("is_active") is False
    if data.password is not None:
        user.password_hash = passwords.hash(data.password)
        user.password_changed_at = now()
    session.flush()
    if ends_sessions:
        sessions.end_user_sessions(session, user.id)
    after = audit.snapshot(user, AUDITED_FIELDS)
    old, new = audit.changed_fields(before, after)
    if data.password is not None:
        old["password"], new["password"] = "(unchanged)", "(changed)"
    audit.record(
        session,
        caller,
        "update",
        "user",
        entity_id=user.id,
        entity_uuid=user.uuid,
        before=old,
        after=new,
    )
    return user


def disable_user(
    session: Session, caller: Caller | None, username: str, *, if_match: str | None = None
) -> User:
    """Accounts are never deleted (the audit trail names them); they are disabled."""
    if caller is not None:
        _require_admin(caller)
    user = _get(session, username)
    check_if_match(user, if_match)
    if caller is not None and user.id == caller.id:
        raise Conflict("You cannot disable your own account")
    if user.is_admin and user.is_active:
        _refuse_removing_last_admin(session)
    if user.is_active:
        user.is_active = False
        session.flush()
        audit.record(
            session,
            caller,
            "disable",
            "user",
            entity_id=user.id,
            entity_uuid=user.uuid,
            before={"is_active": True},
            after={"is_active": False},
        )
    sessions.end_user_sessions(session, user.id)
    return user


def _refuse_removing_last_admin(session: Session) -> None:
    if repository.count_admins(session) <= 1:
        raise Conflict("This is the last active administrator")


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def ensure_admin(session: Session, username: str, password: str | None, passwords: Passwords) -> str | None:
    """On first start, create the administrator. Returns the password if it was generated."""
    if repository.count_admins(session) > 0 or repository.get_by_username(session, username):
        return None
    generated = None
    if not password:
        password = generated = generate_password()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest(f"IPACS_ADMIN_PASSWORD must have at least {MIN_PASSWORD_LENGTH} characters")
    create_user(
        session,
        None,
        UserCreate(username=username, password=password, full_name="Administrator", is_admin=True),
        passwords,
    )
    return generated
