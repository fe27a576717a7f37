"""The real `ipacs serve` process for the load and crash checks, on SQLite or on a PostgreSQL
database of its own (created beside the given URL's database and dropped afterwards)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

ADMIN_PASSWORD = "bench-admin-password"
CHEAP_ARGON2 = {
    "IPACS_ARGON2_TIME_COST": "1",
    "IPACS_ARGON2_MEMORY_COST_KIB": "1024",
    "IPACS_ARGON2_PARALLELISM": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def own_postgres_database(url: str, suffix: str) -> Iterator[str]:
    """A fresh database named after `url`'s plus `suffix`, dropped on exit."""
    base = make_url(url)
    name = f"{base.database}_{suffix}_{os.getpid()}"
    engine = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@dataclass
class Server:
    data_dir: Path
    database_url: str | None
    workers: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ipacs.db').resolve()}"

    def start(self, timeout: float = 90.0) -> None:
        """Start `ipacs serve` and wait until it answers /healthz."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
        env.update(CHEAP_ARGON2)
        env.update(
            {
                "IPACS_DATA_DIR": str(self.data_dir),
                "IPACS_HOST": "127.0.0.1",
                "IPACS_PORT": str(self.port),
                "IPACS_ADMIN_USERNAME": "admin",
                "IPACS_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "IPACS_DICOM_PORT": "0",
                "IPACS_LOG_LEVEL": "WARNING",
                # The clients of a load test fail no logins; keep the throttle out of the way anyway.
                "IPACS_LOGIN_MAX_FAILURES_PER_ADDRESS": "100000",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.database_url:
            env["IPACS_DATABASE_URL"] = self.database_url
        self.output = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ipacs", "serve", "--workers", str(self.workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{''.join(self.output)}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """kill -9 of the supervisor and every worker, mid-flight."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tracebacks(self) -> list[str]:
        return [line for line in self.output if "Traceback" in line or "database is locked" in line]


@contextmanager
def running_server(data_dir: Path, database_url: str | None, workers: int) -> Iterator[Server]:
    """The server on SQLite (database_url None) or on a PostgreSQL database of its own."""
    if database_url and not database_url.startswith("sqlite"):
        with own_postgres_database(database_url, "srv") as own:
            server = Server(data_dir, own, workers)
            server.start()
            try:
                yield server
            finally:
                server.stop()
        return
    server = Server(data_dir, database_url, workers)
    server.start()
    try:
        yield server
    finally:
        server.stop()
