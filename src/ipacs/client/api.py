"""`Client`: one object for a remote iPACS server, with a helper per resource."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import httpx

from ipacs.client import credentials as stored
from ipacs.client.csv_io import ImportReport, import_file, write_export
from ipacs.client.models import ImportSummaryOut, MeOut, PatientResult
from ipacs.client.resources import Datapoints, Patients, ProjectRef, Projects, Studies
from ipacs.client.search import SearchResults, Target, download_csv
from ipacs.client.transport import DEFAULT_TIMEOUT, RetryPolicy, Transport
from ipacs.client.upload import UploadProgress, UploadReport, collect, upload


class Client:
    """A connection to an iPACS server.

        client = Client("http://localhost:8080", "alice", "secret")
        client = Client.from_env()   # IPACS_URL/IPACS_USERNAME/IPACS_PASSWORD or `ipacs login`

    The first request authenticates with Basic; the session cookie it returns
    is used after that. Connection failures, 429 and 503 are retried with
    backoff; errors are raised as `ipacs.client.ApiError` subclasses.
    """

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        session: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = stored.normalise_url(url)
        self.transport = Transport(
            self.url,
            username,
            password,
            session=session,
            timeout=timeout,
            retry=retry,
            http_transport=http_transport,
        )
        self.projects = Projects(self.transport)
        self.patients = Patients(self.transport, self.projects)
        self.datapoints = Datapoints(self.transport, self.projects, self.patients)
        self.studies = Studies(self.transport, self.projects, self.patients)

    @classmethod
    def from_env(cls, url: str | None = None, credentials_file: Path | None = None, **options: Any) -> Client:
        """Credentials from IPACS_URL/IPACS_USERNAME/IPACS_PASSWORD, else from `ipacs login`'s file."""
        found = stored.resolve(url, credentials_file)
        return cls(found.url, found.username, found.password, session=found.session, **options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    @property
    def session_token(self) -> str | None:
        return self.transport.session_token

    def me(self) -> MeOut:
        """The caller, with its project roles (also checks the credentials)."""
        return MeOut.model_validate(self.transport.get_json("/users/me"))

    def logout(self) -> None:
        """End the session on the server."""
        if self.transport.session_token is not None:
            self.transport.request("POST", "/logout")
            self.transport.forget_session()

    def search(
        self,
        project: ProjectRef,
        query: str = "",
        *,
        target: Target = "patients",
        include_values: bool = True,
        page_size: int = 1000,
    ) -> SearchResults:
        """Matches of a StringQuery, e.g. `client.search("Trial A", "age >= 18 AND arm = 'A'")`."""
        return SearchResults(
            self.transport,
            self.projects.id_of(project),
            query,
            target=target,
            include_values=include_values,
            page_size=page_size,
        )

    def search_dataframe(self, project: ProjectRef, query: str = "", *, target: Target = "patients") -> Any:
        """The matches as a pandas DataFrame (pandas must be installed)."""
        return self.search(project, query, target=target).to_dataframe()

    def search_csv(
        self, project: ProjectRef, query: str, dest: Path | IO[bytes], *, target: Target = "patients"
    ) -> int:
        """The server's CSV export of the matches, written to `dest`; returns the bytes written."""
        return download_csv(self.transport, self.projects.id_of(project), query, dest, target)

    def upload(
        self,
        project: ProjectRef,
        paths: Iterable[Path | str],
        *,
        workers: int = 4,
        progress: UploadProgress | None = None,
    ) -> UploadReport:
        """Upload DICOM files, folders and zips; files the project already holds are skipped."""
        items = collect(Path(p) for p in paths)
        return upload(self.transport, self.projects.id_of(project), items, workers=workers, progress=progress)

    def import_values(
        self,
        project: ProjectRef,
        csv_file: Path | str,
        *,
        create_patients: bool = False,
        batch_size: int = 1000,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Import a CSV of patient_id + datapoint columns; raises InvalidImportFile listing every error."""
        pid = self.projects.id_of(project)

        def send(rows: list[dict[str, Any]], dry_run: bool) -> ImportSummaryOut:
            return self.datapoints.import_rows(pid, rows, dry_run=dry_run, create_patients=create_patients)

        definitions = self.datapoints.list(pid)
        return import_file(send, Path(csv_file), definitions, batch_size=batch_size, progress=progress)

    def export_values(self, project: ProjectRef, csv_file: Path | str) -> int:
        """Write every patient of the project subtree with its values (the import's form). Returns rows."""
        pid = self.projects.id_of(project)
        definitions = self.datapoints.list(pid)
        rows = ((r.patient_id, r.values or {}) for r in self.search(pid, "") if isinstance(r, PatientResult))
        return write_export(Path(csv_file), definitions, rows)
