"""Project rules: who may see, create, change, move and delete projects and grant roles."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from ipacs.audit import repository as audit_repository
from ipacs.audit import service as audit
from ipacs.auth.caller import Caller
from ipacs.authz.access import check_role, effective_roles, require_role
from ipacs.authz.roles import Role
from ipacs.datapoints import repository as datapoint_repository
from ipacs.db.paging import Page, PageParams
from ipacs.dicom.removal import StoredFile
from ipacs.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from ipacs.etags import check_if_match
from ipacs.models import AuditEvent, Membership, Project
from ipacs.projects import repository
from ipacs.projects.schemas import MemberOut, PathItem, ProjectCreate, ProjectOut, ProjectUpdate
from ipacs.schemas import Creator
from ipacs.users import repository as user_repository

AUDITED_FIELDS = ("name", "description", "parent_id", "dicom_ae_title")


def present(session: Session, caller: Caller, projects: list[Project]) -> list[ProjectOut]:
    """Projects as the API shows them, with path and my_role, in two queries for any count."""
    ids = [p.id for p in projects]
    paths = repository.ancestor_paths(session, ids)
    roles = effective_roles(session, caller, ids)
    return [
        ProjectOut(
            id=p.id,
            uuid=p.uuid,
            name=p.name,
            description=p.description,
            parent_id=p.parent_id,
            path=[PathItem(id=i, name=n) for i, n in paths.get(p.id, [])],
            dicom_ae_title=p.dicom_ae_title,
            created_at=p.created_at,
            updated_at=p.updated_at,
            creator=Creator.model_validate(p.creator) if p.creator else None,
            my_role=roles[p.id].label if p.id in roles else None,
        )
        for p in projects
    ]


def get_project(session: Session, caller: Caller, project_id: int, needed: Role = Role.VIEWER) -> Project:
    require_role(session, caller, project_id, needed)
    project = repository.get(session, project_id)
    assert project is not None  # require_role found it
    return project


def list_projects(
    session: Session, caller: Caller, params: PageParams, *, search: str | None, parent_id: int | None
) -> Page[Project]:
    return repository.list_visible(session, caller, params, search=search, parent_id=parent_id)


def list_subprojects(
    session: Session, caller: Caller, project_id: int, params: PageParams, *, recursive: bool
) -> Page[Project]:
    require_role(session, caller, project_id, Role.VIEWER)
    return repository.list_descendants(session, caller, project_id, params, recursive=recursive)


def _check_unique(
    session: Session, parent_id: int | None, name: str, ae_title: str | None, exclude_id: int | None
) -> None:
    if repository.sibling_name_taken(session, parent_id, name, exclude_id):
        raise Conflict(f"A project named {name!r} already exists here")
    if ae_title and repository.ae_title_taken(session, ae_title, exclude_id):
        raise Conflict(f"The DICOM AE title {ae_title!r} is used by another project")


def create_project(session: Session, caller: Caller, data: ProjectCreate) -> Project:
    """Top-level projects need an administrator; subprojects a manager of the parent."""
    if data.parent_id is None:
        if not caller.is_admin:
            raise PermissionDenied("Only an administrator may create a top-level project")
    else:
        require_role(session, caller, data.parent_id, Role.MANAGER)
    _check_unique(session, data.parent_id, data.name, data.dicom_ae_title, None)
    project = Project(
        name=data.name,
        description=data.description,
        parent_id=data.parent_id,
        dicom_ae_title=data.dicom_ae_title,
        creator_id=caller.id,
    )
    session.add(project)
    session.flush()
    repository.add_to_tree(session, project.id, data.parent_id)
    audit.record(
        session,
        caller,
        "create",
        "project",
        entity_id=project.id,
        entity_uuid=project.uuid,
        project_id=project.id,
        after=audit.snapshot(project, AUDITED_FIELDS),
    )
    return get_project(session, caller, project.id)


def update_project(
    session: Session, caller: Caller, project_id: int, data: ProjectUpdate, if_match: str | None
) -> Project:
    project = get_project(session, caller, project_id, Role.MANAGER)
    check_if_match(project, if_match)
    before = audit.snapshot(project, AUDITED_FIELDS)
    fields = data.model_dump(exclude_unset=True)
    for required in ("name", "description"):
        if required in fields and fields[required] is None:
            raise InvalidRequest(
                f"{required} cannot be null", details=[{"field": required, "message": "null"}]
            )
    moving = "parent_id" in fields and fields["parent_id"] != project.parent_id
    if moving:
        _check_move(session, caller, project, fields["parent_id"])
    _check_unique(
        session,
        fields.get("parent_id", project.parent_id),
        fields.get("name", project.name),
        fields.get("dicom_ae_title") if "dicom_ae_title" in fields else None,
        project.id,
    )
    for name, value in fields.items():
        setattr(project, name, value)
    session.flush()
    if moving:
        repository.move_subtree(session, project.id, project.parent_id)
    old, new = audit.changed_fields(before, audit.snapshot(project, AUDITED_FIELDS))
    if new:
        audit.record(
            session,
            caller,
            "update",
            "project",
            entity_id=project.id,
            entity_uuid=project.uuid,
            project_id=project.id,
            before=old,
            after=new,
        )
    return get_project(session, caller, project.id)


def _check_move(session: Session, caller: Caller, project: Project, new_parent_id: int | None) -> None:
    """Re-parenting: manager at both ends, no cycle, no datapoint name clash, no orphaned values.

    Both ends are the parent the project leaves and the parent it joins; the top
    level belongs to administrators, so leaving or joining it needs one. Managing
    only the project itself is not enough to take it out of its parent's tree.
    """
    if project.parent_id is None or new_parent_id is None:
        if not caller.is_admin:
            raise PermissionDenied("Only an administrator may move a project from or to the top level")
    else:
        check_role(session, caller, _parent_of(session, project), Role.MANAGER, "Moving a project out")
    if new_parent_id is not None:
        require_role(session, caller, new_parent_id, Role.MANAGER)
        if new_parent_id in repository.subtree_ids(session, project.id):
            raise Conflict("A project cannot be moved under itself or one of its subprojects")
    subtree = repository.subtree_ids(session, project.id)
    old_ancestors = set(repository.ancestor_ids(session, project.id, include_self=False))
    new_ancestors = set(repository.ancestor_ids(session, new_parent_id)) if new_parent_id else set()
    clash = datapoint_repository.name_clashes(session, subtree, new_ancestors)
    if clash:
        raise Conflict(f"Datapoint names would clash after the move: {', '.join(sorted(clash))}")
    strays = repository.count_studies_cut_off(session, subtree, new_ancestors)
    if strays:
        raise Conflict(
            f"{strays} studies in this subtree belong to patients of a project above it, "
            "which would no longer be above them: a study stays within its patient's project"
        )
    lost = datapoint_repository.count_values_of(session, subtree, old_ancestors - new_ancestors)
    if lost:
        raise Conflict(
            f"{lost} datapoint values in this subtree belong to datapoints of the current ancestors, "
            "which would no longer apply after the move"
        )


def _parent_of(session: Session, project: Project) -> Project:
    assert project.parent_id is not None
    parent = repository.get(session, project.parent_id)
    assert parent is not None  # a foreign key
    return parent


def delete_project(
    session: Session, caller: Caller, project_id: int, *, force: bool, if_match: str | None
) -> tuple[dict[str, int], list[StoredFile]]:
    """Refused while it holds subprojects, patients or studies, unless forced; recorded in the audit log.

    Returns what was deleted and the stored files to remove once the
    transaction has committed (`ipacs.dicom.removal`).
    """
    project = get_project(session, caller, project_id, Role.MANAGER)
    check_if_match(project, if_match)
    ids = repository.subtree_ids(session, project.id)
    subprojects = len(ids) - 1
    patients = repository.count_patients(session, ids)
    # Studies count on their own: those of a patient above may be kept here.
    studies = repository.count_studies(session, ids)
    if (subprojects or patients or studies) and not force:
        raise Conflict(
            f"Project {project.name!r} holds {subprojects} subprojects, {patients} patients "
            f"and {studies} studies; delete them first or pass force=true"
        )
    snapshot = audit.snapshot(project, AUDITED_FIELDS)
    counts, files = repository.delete_subtree(session, ids)
    # Recorded on the parent, whose audit log outlives this project.
    audit.record(
        session,
        caller,
        "delete",
        "project",
        entity_id=project_id,
        entity_uuid=project.uuid,
        project_id=project.parent_id,
        before=snapshot,
        after={"deleted": counts},
    )
    return counts, files


def _present_member(m: Membership) -> MemberOut:
    return MemberOut(
        project_id=m.project_id,
        user_id=m.user_id,
        username=m.user.username,
        full_name=m.user.full_name,
        role=Role(m.role).label,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def list_members(session: Session, caller: Caller, project_id: int, params: PageParams) -> Page[MemberOut]:
    get_project(session, caller, project_id, Role.MANAGER)
    page = repository.members(session, project_id, params)
    return Page(
        items=[_present_member(m) for m in page.items],
        total=page.total,
        next_after=page.next_after,
        next_offset=page.next_offset,
    )


def grant_role(session: Session, caller: Caller, project_id: int, username: str, role: str) -> MemberOut:
    project = get_project(session, caller, project_id, Role.MANAGER)
    user = user_repository.get_by_username(session, username)
    if user is None:
        raise NotFound(f"No user {username!r}")
    rank = Role.parse(role)
    membership = repository.membership(session, project.id, user.id)
    # Granting the role already held is no change: nothing to write or record.
    if membership is None or membership.role != rank:
        before = {"username": user.username, "role": Role(membership.role).label} if membership else None
        if membership is None:
            membership = Membership(
                project_id=project.id, user_id=user.id, role=rank, granted_by_id=caller.id
            )
            session.add(membership)
        else:
            membership.role = rank
            membership.granted_by_id = caller.id
        session.flush()
        audit.record(
            session,
            caller,
            "grant" if before is None else "update",
            "membership",
            entity_id=user.id,
            project_id=project.id,
            before=before,
            after={"username": user.username, "role": rank.label},
        )
    session.refresh(membership, ["user"])
    return _present_member(membership)


def revoke_role(session: Session, caller: Caller, project_id: int, username: str) -> None:
    project = get_project(session, caller, project_id, Role.MANAGER)
    user = user_repository.get_by_username(session, username)
    membership = repository.membership(session, project.id, user.id) if user else None
    if user is None or membership is None:
        raise NotFound(f"{username!r} has no role granted on this project")
    before = {"username": username, "role": Role(membership.role).label}
    session.delete(membership)
    session.flush()
    audit.record(
        session, caller, "revoke", "membership", entity_id=user.id, project_id=project.id, before=before
    )


def check_manager(session: Session, caller: Caller, project: Project, what: str) -> None:
    check_role(session, caller, project, Role.MANAGER, what)


def list_audit(
    session: Session,
    caller: Caller,
    project_id: int,
    params: PageParams,
    *,
    entity_type: str | None,
    username: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Page[AuditEvent]:
    """The audit log of the project and its subprojects (managers)."""
    get_project(session, caller, project_id, Role.MANAGER)
    return audit_repository.events_of_subtree(
        session, project_id, params, entity_type=entity_type, username=username, since=since, until=until
    )
