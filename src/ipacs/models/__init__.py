"""All tables, in one package so relationships never import each other in circles."""

from ipacs.db.base import Base
from ipacs.models.audit import AuditEvent
from ipacs.models.datapoint import Datapoint, DatapointValue, DatapointValueVersion
from ipacs.models.patient import Patient
from ipacs.models.project import Membership, Project, ProjectClosure
from ipacs.models.study import Instance, Series, Study
from ipacs.models.user import User, UserSession

__all__ = [
    "AuditEvent",
    "Base",
    "Datapoint",
    "DatapointValue",
    "DatapointValueVersion",
    "Instance",
    "Membership",
    "Patient",
    "Project",
    "ProjectClosure",
    "Series",
    "Study",
    "User",
    "UserSession",
]
