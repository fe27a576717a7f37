"""A Python client for a remote iPACS server; `ipacs login`, `ipacs upload` and friends use it.

    from ipacs.client import Client
    with Client.from_env() as client:
        for patient in client.search("Trial A", "age >= 18 AND arm = 'A'"):
            print(patient.patient_id, patient.values)

See docs/client.md.
"""

from ipacs.client.api import Client
from ipacs.client.csv_io import CellError, ImportReport, InvalidImportFile
from ipacs.client.errors import (
    AmbiguousMatch,
    ApiError,
    BadRequest,
    ConcurrentUpdate,
    Conflict,
    ConnectionFailed,
    CredentialsError,
    ErrorDetail,
    Forbidden,
    IpacsClientError,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from ipacs.client.models import Datapoint, DatapointValue, Patient, Project, Study
from ipacs.client.search import SearchResults
from ipacs.client.transport import RetryPolicy
from ipacs.client.upload import UploadReport

__all__ = [
    "AmbiguousMatch",
    "ApiError",
    "BadRequest",
    "CellError",
    "Client",
    "ConcurrentUpdate",
    "Conflict",
    "ConnectionFailed",
    "CredentialsError",
    "Datapoint",
    "DatapointValue",
    "ErrorDetail",
    "Forbidden",
    "ImportReport",
    "InvalidImportFile",
    "IpacsClientError",
    "NotFound",
    "Patient",
    "PayloadTooLarge",
    "Project",
    "RetryPolicy",
    "SearchResults",
    "ServerError",
    "Study",
    "TooManyRequests",
    "Unauthorized",
    "UploadReport",
]
