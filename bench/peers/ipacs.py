"""`ipacs serve` as an operator would run it: its own data directory, SQLite by default,
or a fresh PostgreSQL database (created on the given server, dropped afterwards).

The benchmark's client is an ordinary account with the `user` role on one
project, so every request pays for the permission checks a real one does.
The administrator only sets the project up.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from bench.peers.servers import Credentials, Server, descendants

AE_TITLE = "BENCHPACS"
_databases = itertools.count(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class IpacsServer(Server):
    def __init__(
        self, workdir: Path, credentials: Credentials, workers: int = 2, pg_url: str | None = None
    ) -> None:
        super().__init__(workdir, credentials)
        self.workers = workers
        self.pg_url = pg_url
        self.name = "iPACS (PostgreSQL)" if pg_url else "iPACS (SQLite)"
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.ae_title = AE_TITLE
        self.admin = Credentials("admin", secrets.token_urlsafe(12))
        self.database_url: str | None = None
        self.project_id = 0
        self._log: IO[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def api(self) -> str:
        return "/api/v1.0"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "ipacs", "serve", "--workers", str(self.workers)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
        env.update(
            {
                "IPACS_DATA_DIR": str(self.workdir / "data"),
                "IPACS_HOST": "127.0.0.1",
                "IPACS_PORT": str(self.http_port),
                "IPACS_DICOM_PORT": str(self.dicom_port),
                "IPACS_ADMIN_USERNAME": self.admin.username,
                "IPACS_ADMIN_PASSWORD": self.admin.password,
                "IPACS_LOG_FORMAT": "text",
                "IPACS_LOG_LEVEL": "WARNING",
            }
        )
        if self.database_url:
            env["IPACS_DATABASE_URL"] = self.database_url
        return env

    def _create_database(self) -> None:
        assert self.pg_url
        base = make_url(self.pg_url)
        name = f"ipacs_bench_peers_{os.getpid()}_{next(_databases)}"
        engine = create_engine(
            base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        self.database_url = base.set(database=name).render_as_string(hide_password=False)

    def _drop_database(self) -> None:
        if not self.database_url:
            return
        url = make_url(self.database_url)
        engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        engine.dispose()
        self.database_url = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.pg_url:
            self._create_database()
        self._log = (self.workdir / "ipacs.log").open("w")
        self.process = subprocess.Popen(
            self.command(), env=self.env(), stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        self._set_up()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ipacs serve exited: {self.log_tail()}")
            try:
                self.curl("/healthz")
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                    return
            except (RuntimeError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"ipacs serve did not answer within 120 s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.workdir / "ipacs.log").read_text()[-3000:]

    def _set_up(self) -> None:
        """One project with its AE title, and the benchmark's user with the `user` role on it."""
        admin = self.admin
        project = self.send_json("POST", f"{self.api}/projects", {"name": "Bench"}, admin)
        self.project_id = project["id"]
        path = f"{self.api}/projects/{self.project_id}"
        self.send_json("PUT", path, {"dicom_ae_title": self.ae_title}, admin)
        user = {"username": self.credentials.username, "password": self.credentials.password}
        self.send_json("POST", f"{self.api}/users", user, admin)
        self.send_json("PUT", f"{path}/members/{self.credentials.username}", {"role": "user"}, admin)

    def session_cookie(self) -> str:
        """Log in once with Basic; the `ipacs_session` cookie the server sets."""
        headers = self.curl(f"{self.api}/users/me", "-D", "-", "-o", "/dev/null").decode()
        for line in headers.splitlines():
            if line.lower().startswith("set-cookie:") and "ipacs_session=" in line:
                return line.split(":", 1)[1].strip().split(";", 1)[0]
        raise RuntimeError("no session cookie in the answer to a Basic request")

    def pids(self) -> list[int]:
        assert self.process is not None
        return descendants(self.process.pid)

    def stop(self) -> None:
        super().stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._drop_database()
