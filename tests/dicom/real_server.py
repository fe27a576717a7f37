"""The real `ipacs serve` process with its DICOM receiver, for tests that send over loopback,
kill it and start it again on the same data directory and database.

On PostgreSQL (IPACS_TEST_DATABASE_URL) the server gets a database of its own,
created next to the test database and dropped afterwards, as tests/test_server_e2e.py does.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pynetdicom import AE, Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.test_server_e2e import ADMIN_PASSWORD, _free_port, _wait_until_ready

_databases = itertools.count(1)


@dataclass
class RealServer:
    data_dir: Path
    database_url: str | None
    http_port: int = field(default_factory=_free_port)
    dicom_port: int = field(default_factory=_free_port)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
        env.update(
            {
                "IPACS_DATA_DIR": str(self.data_dir),
                "IPACS_HOST": "127.0.0.1",
                "IPACS_PORT": str(self.http_port),
                "IPACS_DICOM_PORT": str(self.dicom_port),
                "IPACS_ADMIN_USERNAME": "admin",
                "IPACS_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "IPACS_ARGON2_TIME_COST": "1",
                "IPACS_ARGON2_MEMORY_COST_KIB": "1024",
                "IPACS_ARGON2_PARALLELISM": "1",
                "IPACS_LOG_FORMAT": "text",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.database_url:
            env["IPACS_DATABASE_URL"] = self.database_url
        return env

    def start(self) -> None:
        """Start `ipacs serve` and wait until HTTP and the receiver answer."""
        assert self.process is None
        self.output.append("---- start\n")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ipacs", "serve"],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_until_ready(self.process, self.output)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no cleanup runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url + "/api/v1.0", auth=("admin", ADMIN_PASSWORD), timeout=60)

    def engine(self) -> Engine:
        """The server's database, for checking what it committed."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'ipacs.db'}"
        return create_engine(url, poolclass=NullPool)

    def associate(self, called: str, contexts: list[Any]) -> Association:
        ae = AE(ae_title="TESTSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(Verification)
        for context in contexts:
            ae.add_requested_context(*context)
        assoc = ae.associate("127.0.0.1", self.dicom_port, ae_title=called)
        if assoc.is_established:
            # What storescu does with TCP_NODELAY=1: no ~40 ms Nagle stall per C-STORE.
            assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return assoc

    def stray_temp_files(self) -> list[Path]:
        return list((self.data_dir / "store" / "tmp").rglob("*"))


@contextmanager
def _own_postgres_database(test_url: str) -> Iterator[str]:
    base = make_url(test_url)
    name = f"{base.database}_dicom_{os.getpid()}_{next(_databases)}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def real_server(data_dir: Path) -> Iterator[RealServer]:
    """A server (not started yet) on `data_dir` and a database of its own; stopped and dropped on exit."""
    test_url = os.environ.get("IPACS_TEST_DATABASE_URL")
    with _own_postgres_database(test_url) if test_url else _no_database() as database_url:
        server = RealServer(data_dir, database_url)
        try:
            yield server
        finally:
            server.stop()
        output = "".join(server.output)
        assert "Traceback" not in output, output


@contextmanager
def _no_database() -> Iterator[None]:
    yield None  # the server's embedded SQLite in its data directory


def create_project(server: RealServer, name: str, ae_title: str) -> int:
    """A top-level project, given its AE title by a manager's PUT /projects/{id}, as the docs say."""
    with server.admin() as api:
        r = api.post("/projects", json={"name": name})
        assert r.status_code == 201, r.text
        project_id: int = r.json()["id"]
        r = api.put(f"/projects/{project_id}", json={"dicom_ae_title": ae_title})
        assert r.status_code == 200 and r.json()["dicom_ae_title"] == ae_title, r.text
    return project_id
