"""Project queries and the closure-table bookkeeping of the tree."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import Select, delete, func, insert, literal, or_, select, true
from sqlalchemy.orm import Session, aliased, joinedload

from ipacs.auth.caller import Caller
from ipacs.authz.access import readable_project_ids
from ipacs.db.like import LIKE_ESCAPE, contains_pattern
from ipacs.db.paging import Page, PageParams, fetch_page
from ipacs.dicom.removal import StoredFile
from ipacs.models import (
    Datapoint,
    DatapointValue,
    DatapointValueVersion,
    Membership,
    Patient,
    Project,
    ProjectClosure,
    Study,
    User,
)
from ipacs.studies import repository as study_repository


def _visible(caller: Caller) -> Select[Project]:
    return (
        select(Project)
        .options(joinedload(Project.creator))
        .where(Project.id.in_(readable_project_ids(caller)))
    )


def get(session: Session, project_id: int) -> Project | None:
    return session.scalars(
        select(Project).options(joinedload(Project.creator)).where(Project.id == project_id)
    ).first()


def list_visible(
    session: Session, caller: Caller, params: PageParams, *, search: str | None, parent_id: int | None
) -> Page[Project]:
    stmt = _visible(caller)
    if search:
        pattern = contains_pattern(search)
        stmt = stmt.where(
            or_(
                func.lower(Project.name).like(pattern, escape=LIKE_ESCAPE),
                func.lower(Project.description).like(pattern, escape=LIKE_ESCAPE),
            )
        )
    if parent_id is not None:
        stmt = stmt.where(Project.parent_id == parent_id)
    return fetch_page(session, stmt, Project.id, params)


def list_descendants(
    session: Session, caller: Caller, project_id: int, params: PageParams, *, recursive: bool
) -> Page[Project]:
    depth = ProjectClosure.depth >= 1 if recursive else ProjectClosure.depth == 1
    below = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id, depth)
    return fetch_page(session, _visible(caller).where(Project.id.in_(below)), Project.id, params)


def ancestor_paths(session: Session, project_ids: Iterable[int]) -> dict[int, list[tuple[int, str]]]:
    """For each project, its ancestors (id, name) from the top, in one query."""
    ids = list(set(project_ids))
    paths: dict[int, list[tuple[int, str]]] = defaultdict(list)
    if not ids:
        return paths
    rows = session.execute(
        select(ProjectClosure.descendant_id, Project.id, Project.name)
        .join(Project, Project.id == ProjectClosure.ancestor_id)
        .where(ProjectClosure.descendant_id.in_(ids), ProjectClosure.depth > 0)
        .order_by(ProjectClosure.descendant_id, ProjectClosure.depth.desc())
    )
    for descendant, ancestor_id, name in rows:
        paths[descendant].append((ancestor_id, name))
    return paths


def ancestor_ids(session: Session, project_id: int, *, include_self: bool = True) -> list[int]:
    min_depth = 0 if include_self else 1
    return list(
        session.scalars(
            select(ProjectClosure.ancestor_id).where(
                ProjectClosure.descendant_id == project_id, ProjectClosure.depth >= min_depth
            )
        )
    )


def subtree_ids(session: Session, project_id: int) -> list[int]:
    """The project and all its descendants, deepest first."""
    return list(
        session.scalars(
            select(ProjectClosure.descendant_id)
            .where(ProjectClosure.ancestor_id == project_id)
            .order_by(ProjectClosure.depth.desc(), ProjectClosure.descendant_id)
        )
    )


def sibling_name_taken(
    session: Session, parent_id: int | None, name: str, exclude_id: int | None = None
) -> bool:
    same_parent = Project.parent_id.is_(None) if parent_id is None else Project.parent_id == parent_id
    stmt = select(Project.id).where(same_parent, func.lower(Project.name) == name.lower())
    if exclude_id is not None:
        stmt = stmt.where(Project.id != exclude_id)
    return session.scalar(stmt.limit(1)) is not None


def ae_title_taken(session: Session, ae_title: str, exclude_id: int | None = None) -> bool:
    stmt = select(Project.id).where(Project.dicom_ae_title == ae_title)
    if exclude_id is not None:
        stmt = stmt.where(Project.id != exclude_id)
    return session.scalar(stmt.limit(1)) is not None


def add_to_tree(session: Session, project_id: int, parent_id: int | None) -> None:
    """Closure rows for a new leaf: itself at depth 0, and each ancestor of the parent."""
    session.execute(insert(ProjectClosure).values(ancestor_id=project_id, descendant_id=project_id, depth=0))
    if parent_id is not None:
        session.execute(
            insert(ProjectClosure).from_select(
                ["ancestor_id", "descendant_id", "depth"],
                select(ProjectClosure.ancestor_id, literal(project_id), ProjectClosure.depth + 1).where(
                    ProjectClosure.descendant_id == parent_id
                ),
            )
        )


def move_subtree(session: Session, project_id: int, new_parent_id: int | None) -> None:
    """Re-hang a subtree: drop its links to old ancestors, link it under the new parent."""
    subtree = select(ProjectClosure.descendant_id).where(ProjectClosure.ancestor_id == project_id)
    session.execute(
        delete(ProjectClosure).where(
            ProjectClosure.descendant_id.in_(subtree),
            ProjectClosure.ancestor_id.not_in(subtree),
        )
    )
    if new_parent_id is None:
        return
    above = aliased(ProjectClosure)
    below = aliased(ProjectClosure)
    session.execute(
        insert(ProjectClosure).from_select(
            ["ancestor_id", "descendant_id", "depth"],
            # Every ancestor of the new parent times every member of the subtree.
            select(above.ancestor_id, below.descendant_id, above.depth + below.depth + 1)
            .select_from(above)
            .join(below, true())
            .where(above.descendant_id == new_parent_id, below.ancestor_id == project_id),
        )
    )


def count_subprojects(session: Session, project_id: int) -> int:
    return (
        session.scalar(select(func.count()).select_from(Project).where(Project.parent_id == project_id)) or 0
    )


def count_patients(session: Session, project_ids: list[int]) -> int:
    return (
        session.scalar(select(func.count()).select_from(Patient).where(Patient.project_id.in_(project_ids)))
        or 0
    )


def count_studies(session: Session, project_ids: list[int]) -> int:
    """Studies kept in these projects (a patient's studies may sit in its subprojects)."""
    stmt = select(func.count()).select_from(Study).where(Study.project_id.in_(project_ids))
    return session.scalar(stmt) or 0


def count_studies_cut_off(session: Session, subtree: list[int], new_ancestors: Iterable[int]) -> int:
    """Studies in a moving subtree whose patient lives above it, and would no longer after the move."""
    stays_above = [*subtree, *new_ancestors]
    stmt = (
        select(func.count())
        .select_from(Study)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Study.project_id.in_(subtree), Patient.project_id.not_in(stays_above))
    )
    return session.scalar(stmt) or 0


def delete_subtree(session: Session, ids: list[int]) -> tuple[dict[str, int], list[StoredFile]]:
    """Delete projects (deepest first) and everything in them.

    Returns what was deleted, and the stored files the deleted instances
    named: remove those after the commit (`ipacs.dicom.removal`).
    """
    patients = select(Patient.id).where(Patient.project_id.in_(ids))
    values = select(DatapointValue.id).where(
        or_(
            DatapointValue.patient_id.in_(patients),
            DatapointValue.datapoint_id.in_(select(Datapoint.id).where(Datapoint.project_id.in_(ids))),
        )
    )
    counts = {
        "projects": len(ids),
        "patients": session.scalar(select(func.count()).select_from(patients.subquery())) or 0,
        "datapoints": session.scalar(
            select(func.count()).select_from(Datapoint).where(Datapoint.project_id.in_(ids))
        )
        or 0,
        "datapoint_values": session.scalar(select(func.count()).select_from(values.subquery())) or 0,
    }
    session.execute(delete(DatapointValueVersion).where(DatapointValueVersion.value_id.in_(values)))
    session.execute(delete(DatapointValue).where(DatapointValue.id.in_(values)))
    imaging = study_repository.delete_studies(
        session, or_(Study.project_id.in_(ids), Study.patient_id.in_(patients))
    )
    counts.update(imaging.counts())
    session.execute(delete(Patient).where(Patient.project_id.in_(ids)))
    session.execute(delete(Datapoint).where(Datapoint.project_id.in_(ids)))
    session.execute(delete(Membership).where(Membership.project_id.in_(ids)))
    session.execute(delete(ProjectClosure).where(ProjectClosure.descendant_id.in_(ids)))
    for project_id in ids:  # deepest first, so parent_id references never dangle
        session.execute(delete(Project).where(Project.id == project_id))
    return counts, imaging.files


def members(session: Session, project_id: int, params: PageParams) -> Page[Membership]:
    stmt = (
        select(Membership)
        .options(joinedload(Membership.user))
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project_id)
    )
    return fetch_page(session, stmt, Membership.user_id, params)


def membership(session: Session, project_id: int, user_id: int) -> Membership | None:
    return session.get(Membership, (project_id, user_id))
