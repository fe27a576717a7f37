"""The `ipacs` command: serve, db, user, store, demo.

Every command opens its own transactions around the same services the HTTP
API uses, so the command line follows the same rules and leaves the same
audit trail.
"""

from __future__ import annotations

import logging.config
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from ipacs.auth.passwords import MIN_PASSWORD_LENGTH, Passwords
from ipacs.client.commands import register as register_remote_commands
from ipacs.config import Settings, get_settings
from ipacs.db.engine import Database
from ipacs.db.migrate import upgrade_to_head
from ipacs.dicom.receiver import Receiver
from ipacs.dicom.removal import sweep_unreferenced
from ipacs.dicom.storage import FileStore
from ipacs.errors import IpacsError
from ipacs.telemetry.log_format import log_config
from ipacs.users import repository as user_repository
from ipacs.users import service as user_service
from ipacs.users.schemas import UserCreate, UserUpdate

app = typer.Typer(help="iPACS research-imaging archive.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts on this server's database.", no_args_is_help=True)
store_app = typer.Typer(help="The DICOM file store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(store_app, name="store")
register_remote_commands(app)  # login, projects, patients, search, upload, ... (ipacs.client)
console = Console()
err_console = Console(stderr=True)


def _database(settings: Settings) -> Database:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Database(settings.effective_database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)


@contextmanager
def _transaction(settings: Settings) -> Iterator[Session]:
    database = _database(settings)
    try:
        # Account commands may run before the first `ipacs serve`.
        upgrade_to_head(database.engine)
        with database.session(write=True) as session, session.begin():
            yield session
    except IpacsError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        err_console.print(f"[red]error:[/red] a password needs at least {MIN_PASSWORD_LENGTH} characters")
        raise typer.Exit(1)
    return password


def prepare_database(settings: Settings) -> None:
    """Migrate, create the first administrator if none exists, sweep temp files of a crash."""
    database = _database(settings)
    swept = FileStore(settings.data_dir / "store").sweep_temp()
    if swept:
        err_console.print(f"removed {swept} temporary files left by an interrupted run")
    try:
        upgrade_to_head(database.engine)
        admin_password = settings.admin_password.get_secret_value() if settings.admin_password else None
        with database.session(write=True) as session, session.begin():
            generated = user_service.ensure_admin(
                session, settings.admin_username, admin_password, Passwords(settings)
            )
    except IpacsError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        database.dispose()
    if generated:
        # Printed once, to the console only: never logged, never stored.
        err_console.print(
            f"[bold yellow]Created administrator {settings.admin_username!r} with password: "
            f"{generated}[/bold yellow]\nStore it now; it is not shown again."
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (IPACS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (IPACS_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="server processes (IPACS_WORKERS)")] = None,
) -> None:
    """Start the HTTP API (and the DICOM receiver), migrating the database first."""
    import uvicorn

    for name, value in (("IPACS_HOST", host), ("IPACS_PORT", port), ("IPACS_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    prepare_database(settings)
    err_console.print(f"iPACS on http://{settings.host}:{settings.port}/api/v1.0 (data: {settings.data_dir})")
    logging.config.dictConfig(log_config(settings.log_format, settings.log_level))
    if settings.workers > 1:
        # Metrics of all worker processes are summed through files in this folder.
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    receiver = None
    if settings.workers > 1 and settings.dicom_port:
        # One receiver for the machine: it lives in this supervisor process,
        # and the HTTP workers leave the DICOM port alone.
        os.environ["IPACS_DICOM_IN_APP"] = "false"
        database = _database(settings)
        receiver = Receiver(
            database,
            FileStore(settings.data_dir / "store"),
            settings.dicom_ae_title,
            max_instance_bytes=settings.max_instance_bytes,
        )
        receiver.start(settings.host, settings.dicom_port)
    if settings.dicom_port:
        err_console.print(f"DICOM receiver on {settings.host}:{settings.dicom_port}, AE title per project")
    uvicorn.run(
        "ipacs.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        proxy_headers=False,
        server_header=False,
        # Slow clients (docs/security.md): h11 caps the request line and headers and
        # answers 400 past the cap; an idle keep-alive connection is closed after a few
        # seconds; a JSON body that stalls is 408 (api/middleware.py).
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=30,
        log_config=log_config(settings.log_format, settings.log_level),
        access_log=False,
    )
    if receiver is not None:
        receiver.stop()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database to the current schema revision."""
    settings = get_settings()
    database = _database(settings)
    try:
        upgrade_to_head(database.engine)
    finally:
        database.dispose()
    console.print("database is at the current revision")


@user_app.command("create")
def user_create(
    username: str,
    full_name: Annotated[str, typer.Option(help="display name")] = "",
    email: Annotated[str | None, typer.Option()] = None,
    admin: Annotated[bool, typer.Option("--admin", help="system administrator")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
) -> None:
    """Create an account (the password is prompted for, or read from stdin)."""
    settings = get_settings()
    password = _read_password(password_stdin)
    try:
        data = UserCreate(
            username=username, password=password, full_name=full_name, email=email, is_admin=admin
        )
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    with _transaction(settings) as session:
        user_service.create_user(session, None, data, Passwords(settings))
    console.print(f"created user {username}")


@user_app.command("list")
def user_list() -> None:
    """List accounts."""
    from sqlalchemy import select

    from ipacs.models import User

    settings = get_settings()
    with _transaction(settings) as session:
        users = list(session.scalars(select(User).order_by(User.id)))
    table = Table("id", "username", "full name", "admin", "active")
    for u in users:
        table.add_row(
            str(u.id),
            u.username,
            u.full_name,
            "yes" if u.is_admin else "",
            "yes" if u.is_active else "no",
        )
    console.print(table)


@user_app.command("passwd")
def user_passwd(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
) -> None:
    """Set a new password; the user's sessions end."""
    settings = get_settings()
    password = _read_password(password_stdin)
    with _transaction(settings) as session:
        user_service.update_user(session, None, username, UserUpdate(password=password), Passwords(settings))
    console.print(f"password changed for {username}")


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable an account; its sessions end at once."""
    settings = get_settings()
    with _transaction(settings) as session:
        user_service.disable_user(session, None, username)
    console.print(f"disabled {username}")


@user_app.command("enable")
def user_enable(username: str) -> None:
    """Enable a disabled account."""
    settings = get_settings()
    with _transaction(settings) as session:
        if user_repository.get_by_username(session, username) is None:
            err_console.print(f"[red]error:[/red] no user {username!r}")
            raise typer.Exit(1)
        user_service.update_user(session, None, username, UserUpdate(is_active=True), Passwords(settings))
    console.print(f"enabled {username}")


@store_app.command("sweep")
def store_sweep(
    grace: Annotated[
        int | None,
        typer.Option(help="leave files younger than this many seconds (IPACS_STORE_SWEEP_GRACE, 3600)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would go, remove nothing")] = False,
) -> None:
    """Remove stored files no instance names (left by a crash); safe while servers run."""
    settings = get_settings()
    database = _database(settings)
    try:
        grace_seconds = settings.store_sweep_grace if grace is None else grace
        report = sweep_unreferenced(
            database, FileStore(settings.data_dir / "store"), grace_seconds, dry_run=dry_run
        )
    finally:
        database.dispose()
    if dry_run:
        console.print(
            f"{report.checked} files in the store, {report.unreferenced} named by no instance "
            f"(would be removed), {report.recent} younger than {grace_seconds} s left alone"
        )
    else:
        console.print(
            f"{report.checked} files in the store, {report.removed} named by no instance removed "
            f"({report.removed_bytes} bytes), {report.recent} younger than {grace_seconds} s left alone"
        )


@app.command()
def demo(
    patients: Annotated[int, typer.Option(help="how many synthetic patients")] = 200,
    datapoints: Annotated[int, typer.Option(help="datapoint definitions (values per patient)")] = 10,
    name: Annotated[str, typer.Option(help="name of the demo project")] = "Demo trial",
    batch_size: Annotated[int, typer.Option(help="rows per transaction")] = 5000,
) -> None:
    """Load a demo project (two sites, typed datapoints, patients with values and studies)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from ipacs.auth.caller import Caller
    from ipacs.demo import load_demo

    settings = get_settings()
    prepare_database(settings)
    database = _database(settings)
    try:
        with database.session() as session:
            admin = user_repository.first_admin(session)
        if admin is None:
            err_console.print("[red]error:[/red] no active administrator to own the demo data")
            raise typer.Exit(1)
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err_console) as bar:
            task = bar.add_task("patients", total=patients)
            try:
                result = load_demo(
                    database,
                    Caller.from_user(admin),
                    name=name,
                    patients=patients,
                    datapoints=datapoints,
                    batch_size=batch_size,
                    progress=lambda n: bar.advance(task, n),
                )
            except IpacsError as exc:
                err_console.print(f"[red]error:[/red] {exc.message}")
                raise typer.Exit(1) from exc
    finally:
        database.dispose()
    console.print(
        f"project {result.project_id} {name!r}: {result.patients} patients, "
        f"{result.values} datapoint values, {result.studies} studies"
    )


def main() -> None:
    app()
