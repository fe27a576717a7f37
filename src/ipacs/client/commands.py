"""The `ipacs` commands for users of a remote server: login, projects, patients,
datapoints, search, upload, download. Tables for people, `--json` for scripts.

They read the server and credentials from IPACS_URL / IPACS_USERNAME /
IPACS_PASSWORD, or from the file `ipacs login` writes. PROJECT is an id or a
path such as "Trial A/Site 1".
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ipacs.client import credentials
from ipacs.client.api import Client
from ipacs.client.csv_io import InvalidImportFile
from ipacs.client.errors import IpacsClientError
from ipacs.client.models import Study
from ipacs.client.upload import Outcome, UploadItem, UploadReport, collect
from ipacs.client.upload import upload as run_upload

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]
ProjectArg = Annotated[str, typer.Argument(help='project id or path, e.g. "Trial A/Site 1"')]

ZIP_OVERHEAD_PER_FILE = 300

projects_app = typer.Typer(help="Projects on the server (`ipacs projects` lists them).")
datapoints_app = typer.Typer(help="Datapoint definitions and values: list, create, import, export.")


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(1)


@contextmanager
def connected() -> Iterator[Client]:
    """A client from the environment or the credentials file; errors end the command with status 1."""
    try:
        found = credentials.resolve()
        client = Client(found.url, found.username, found.password, session=found.session)
    except IpacsClientError as exc:
        raise _fail(str(exc)) from exc
    try:
        with client:
            yield client
            _remember_session(found, client)
    except IpacsClientError as exc:
        raise _fail(str(exc)) from exc


def _remember_session(found: credentials.Credentials, client: Client) -> None:
    """After logging in again with a stored password, keep the new session in the file."""
    try:
        stored = credentials.read_file()
    except IpacsClientError:
        return
    token = client.session_token
    same_login = stored is not None and (stored.url, stored.username) == (found.url, found.username)
    if stored is not None and same_login and token and stored.session != token:
        credentials.write_file(replace(stored, session=token))


def _json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def login(
    url: Annotated[str, typer.Argument(help="the server, e.g. http://localhost:8080")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="default: prompted")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
    save_password: Annotated[
        bool, typer.Option("--save-password", help="also store the password, to log in again unattended")
    ] = False,
) -> None:
    """Log in to a server; the session is kept in ~/.config/ipacs/credentials (mode 0600)."""
    try:
        server = credentials.normalise_url(url)
    except IpacsClientError as exc:
        raise _fail(str(exc)) from exc
    username = username or typer.prompt("Username")
    if password_stdin or not sys.stdin.isatty():
        # Piped in (scripts): read one line, without a prompt that would go nowhere.
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    try:
        with Client(server, username, password) as client:
            me = client.me()
            token = client.session_token
    except IpacsClientError as exc:
        raise _fail(str(exc)) from exc
    path = credentials.write_file(
        credentials.Credentials(server, username, password if save_password else None, token)
    )
    err_console.print(f"Logged in to {server} as {me.username}; session stored in {path}")


def logout() -> None:
    """End the session and remove the stored credentials."""
    with connected() as client:
        client.logout()
    credentials.remove_file()
    err_console.print("Logged out")


@projects_app.callback(invoke_without_command=True)
def projects(
    ctx: typer.Context,
    search: Annotated[str | None, typer.Option(help="in name and description")] = None,
    as_json: JsonOption = False,
) -> None:
    """List the projects you can see."""
    if ctx.invoked_subcommand is not None:
        return
    with connected() as client:
        found = client.projects.list(search=search)
    if as_json:
        _json(found)
        return
    table = Table("id", "path", "my role", "description")
    for p in sorted(found, key=lambda p: p.full_path):
        table.add_row(str(p.id), p.full_path, p.my_role or "", p.description)
    console.print(table)


@projects_app.command("create")
def projects_create(
    name: str,
    parent: Annotated[str | None, typer.Option(help="parent project id or path")] = None,
    description: Annotated[str, typer.Option()] = "",
    ae_title: Annotated[str | None, typer.Option(help="DICOM AE title that stores into it")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project (top level: administrators; subproject: managers of the parent)."""
    with connected() as client:
        project = client.projects.create(
            name, parent=parent, description=description, dicom_ae_title=ae_title
        )
    if as_json:
        _json(project)
    else:
        console.print(f"created project {project.id} {project.full_path!r}")


def patients(
    project: ProjectArg,
    recursive: Annotated[bool, typer.Option(help="include the subprojects' patients")] = True,
    search: Annotated[str | None, typer.Option(help="in patient_id and name")] = None,
    as_json: JsonOption = False,
) -> None:
    """List a project's patients."""
    with connected() as client:
        found = client.patients.list(project, recursive=recursive, search=search)
    if as_json:
        _json(found)
        return
    table = Table("id", "patient_id", "name", "sex", "birth date", "project")
    for p in found:
        table.add_row(
            str(p.id),
            p.patient_id,
            _cell(p.patient_name),
            _cell(p.sex),
            _cell(p.birth_date),
            str(p.project_id),
        )
    console.print(table)
    err_console.print(f"{len(found)} patients")


@datapoints_app.command("list")
def datapoints_list(project: ProjectArg, as_json: JsonOption = False) -> None:
    """The datapoint definitions that apply in a project."""
    with connected() as client:
        found = client.datapoints.list(project)
    if as_json:
        _json(found)
        return
    table = Table("name", "type", "label", "unit", "min", "max", "choices", "project")
    for d in found:
        table.add_row(
            d.name,
            d.type,
            _cell(d.label),
            _cell(d.unit),
            _cell(d.minimum),
            _cell(d.maximum),
            ", ".join(d.choices or []),
            str(d.project_id),
        )
    console.print(table)


DatapointType = Literal["string", "integer", "decimal", "boolean", "date", "datetime", "choice"]


@datapoints_app.command("create")
def datapoints_create(
    project: ProjectArg,
    name: str,
    type_: Annotated[DatapointType, typer.Option("--type", help="the value type")],
    label: Annotated[str | None, typer.Option()] = None,
    unit: Annotated[str | None, typer.Option()] = None,
    choices: Annotated[str | None, typer.Option(help="comma-separated, for --type choice")] = None,
    minimum: Annotated[str | None, typer.Option(help="a number, or a date for date types")] = None,
    maximum: Annotated[str | None, typer.Option(help="a number, or a date for date types")] = None,
    required: Annotated[bool, typer.Option()] = False,
    as_json: JsonOption = False,
) -> None:
    """Define a datapoint on a project (managers)."""
    fields: dict[str, Any] = {"label": label, "unit": unit, "required": required}
    if choices is not None:
        fields["choices"] = [c.strip() for c in choices.split(",") if c.strip()]
    for key, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None:
            fields[key] = _number_or_text(bound)
    with connected() as client:
        created = client.datapoints.create(project, name, type_, **fields)
    if as_json:
        _json(created)
    else:
        console.print(f"created datapoint {created.name!r} ({created.type}) on project {created.project_id}")


def _number_or_text(text: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


@datapoints_app.command("import")
def datapoints_import(
    project: ProjectArg,
    csv_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="patient_id + datapoint columns")
    ],
    create_patients: Annotated[bool, typer.Option(help="create patients not found, in PROJECT")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="rows per atomic request")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Import values from CSV: the whole file is checked first; nothing is written if a cell is bad."""
    with connected() as client:
        try:
            with _bar(as_json, "writing", "rows") as (bar, task):
                report = client.import_values(
                    project,
                    csv_file,
                    create_patients=create_patients,
                    batch_size=batch_size,
                    progress=lambda n: bar.advance(task, n),
                )
        except InvalidImportFile as exc:
            if as_json:
                _json({"success": False, "message": str(exc), "errors": [asdict(e) for e in exc.errors]})
            else:
                for error in exc.errors:
                    err_console.print(str(error), highlight=False, markup=False)
            raise _fail(str(exc)) from exc
    if as_json:
        _json({"success": True, **asdict(report)})
        return
    console.print(
        f"imported {report.rows} rows in {report.batches} batches: {report.values_created} values created, "
        f"{report.values_updated} updated, {report.values_unchanged} unchanged, "
        f"{report.patients_created} patients created"
    )


@contextmanager
def _bar(quiet: bool, what: str, unit: str) -> Iterator[tuple[Progress, Any]]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        yield bar, bar.add_task(what, total=None)


@datapoints_app.command("export")
def datapoints_export(
    project: ProjectArg,
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="the CSV file to write")],
) -> None:
    """Export every patient's values (the import's format: patient_id + one column per datapoint)."""
    with connected() as client:
        rows = client.export_values(project, output)
    err_console.print(f"exported {rows} patients to {output}")


def search(
    project: ProjectArg,
    query: Annotated[str, typer.Argument(help="a StringQuery, e.g. \"age >= 18 AND arm = 'A'\"")] = "",
    target: Annotated[str, typer.Option(help="patients or studies")] = "patients",
    csv_file: Annotated[
        Path | None, typer.Option("--csv", dir_okay=False, help="write every match here")
    ] = None,
    limit: Annotated[int, typer.Option(help="rows shown in the table")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Search a project and its subprojects (docs/query-language.md)."""
    if target not in ("patients", "studies"):
        raise _fail("--target is patients or studies")
    kind: Literal["patients", "studies"] = "patients" if target == "patients" else "studies"
    with connected() as client:
        if csv_file is not None:
            client.search_csv(project, query, csv_file, target=kind)
            err_console.print(f"wrote the matches to {csv_file}")
            return
        results = client.search(project, query, target=kind)
        found = list(results) if as_json else [r for _, r in zip(range(limit), results, strict=False)]
    if as_json:
        _json(found)
        return
    _search_table(found, kind)
    err_console.print(
        f"{results.total} matches" + (f" (first {len(found)} shown)" if results.total != len(found) else "")
    )


def _search_table(found: list[Any], target: str) -> None:
    names = list(dict.fromkeys(n for r in found for n in (r.values or {})))
    if target == "patients":
        table = Table("id", "patient_id", "sex", "birth date", "project", *names)
        for r in found:
            values = r.values or {}
            table.add_row(
                str(r.id),
                r.patient_id,
                _cell(r.sex),
                _cell(r.birth_date),
                str(r.project_id),
                *(_cell(values.get(n)) for n in names),
            )
    else:
        table = Table("id", "patient", "study date", "modalities", "visit", "instances", *names)
        for r in found:
            values = r.values or {}
            table.add_row(
                str(r.id),
                str(r.patient_id),
                _cell(r.study_date),
                ",".join(r.modalities),
                _cell(r.visit),
                str(r.instance_count),
                *(_cell(values.get(n)) for n in names),
            )
    console.print(table)


class _UploadBar:
    """The upload's progress: files hashed, then files and bytes sent, with the rate."""

    def __init__(self, bar: Progress, files: int, size: int) -> None:
        self.bar = bar
        self.hashing = bar.add_task("hashing", total=size, files=0, total_files=files)
        self.sending = bar.add_task("uploading", total=size, files=0, total_files=files)
        self.done = 0
        self.hashed_files = 0

    def hashed(self, item: UploadItem) -> None:
        self.hashed_files += 1
        self.bar.update(self.hashing, advance=item.size, files=self.hashed_files)

    def finished(self, item: UploadItem, outcome: Outcome, reason: str | None) -> None:
        self.done += 1
        self.bar.update(self.sending, advance=item.size, files=self.done)


def upload(
    project: ProjectArg,
    paths: Annotated[list[Path], typer.Argument(exists=True, help="DICOM files, folders, zips")],
    workers: Annotated[int, typer.Option(min=1, max=32, help="parallel uploads")] = 4,
    as_json: JsonOption = False,
) -> None:
    """Upload DICOM; files the project already holds are skipped, so a re-run resumes."""
    try:
        items = collect(paths)
    except OSError as exc:
        raise _fail(str(exc)) from exc
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.fields[files]}/{task.fields[total_files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with connected() as client, Progress(*columns, console=err_console, disable=as_json) as bar:
        report = _upload_items(client, project, items, workers, bar)
    if as_json:
        summary = {k: v for k, v in asdict(report).items() if k != "failed"}
        _json({**summary, "failed": [{"name": n, "reason": r} for n, r in report.failed]})
    else:
        console.print(
            f"{report.files} files: {report.stored} stored, {report.skipped} already stored (skipped), "
            f"{report.duplicates} duplicates, {len(report.failed)} failed"
        )
        for name, reason in report.failed:
            err_console.print(f"[red]failed:[/red] {name}: {reason}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _upload_items(
    client: Client, project: str, items: list[UploadItem], workers: int, bar: Progress
) -> UploadReport:
    progress = _UploadBar(bar, len(items), sum(i.size for i in items))
    return run_upload(
        client.transport, client.projects.id_of(project), items, workers=workers, progress=progress
    )


def download(
    project: ProjectArg,
    patient: Annotated[str, typer.Argument(help="the patient_id (DICOM PatientID)")],
    study: Annotated[str | None, typer.Argument(help="a study id or StudyInstanceUID; default: all")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", file_okay=False, help="folder to write into")
    ] = Path("."),
    keep_zip: Annotated[bool, typer.Option("--zip", help="keep each study as a zip, do not unpack")] = False,
) -> None:
    """Download a patient's studies (DICOM files, unpacked into PatientID/StudyUID/Series/)."""
    with connected() as client:
        found = client.patients.get(project, patient)
        studies = client.studies.list(project, found)
        if study is not None:
            studies = [s for s in studies if study in (str(s.id), s.study_instance_uid)]
            if not studies:
                raise _fail(f"patient {patient!r} has no study {study!r}")
        output.mkdir(parents=True, exist_ok=True)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=err_console) as bar:
            # The zip adds a header per file to the files' own size.
            estimate = sum(s.size_bytes + ZIP_OVERHEAD_PER_FILE * s.instance_count for s in studies)
            task = bar.add_task("downloading", total=estimate or None)
            files = sum(
                _download_study(client, project, found.id, s, output, keep_zip, bar, task) for s in studies
            )
    err_console.print(f"downloaded {len(studies)} studies ({files} files) into {output}")


def _download_study(
    client: Client,
    project: str,
    patient_pk: int,
    study: Study,
    output: Path,
    keep_zip: bool,
    bar: Progress,
    task: Any,
) -> int:
    target = output / f"{study.study_instance_uid}.zip"
    partial = target.with_suffix(".zip.part")
    client.studies.download(project, patient_pk, study, partial, progress=lambda n: bar.advance(task, n))
    with zipfile.ZipFile(partial) as archive:
        names = [m for m in archive.namelist() if not m.endswith("/")]
        if not keep_zip:
            root = output.resolve()
            for member in names:
                if not (root / member).resolve().is_relative_to(root):
                    raise _fail(f"unsafe path in the archive: {member!r}")
            archive.extractall(output)
    if keep_zip:
        partial.replace(target)
    else:
        partial.unlink()
    return len(names)


def register(app: typer.Typer) -> None:
    """Add the remote commands to the `ipacs` program."""
    for command in (login, logout, patients, search, upload, download):
        app.command()(command)
    app.add_typer(projects_app, name="projects")
    app.add_typer(datapoints_app, name="datapoints")
