"""Fixtures for the client tests: one real `ipacs serve` process for the module
(SQLite in its data directory, or a PostgreSQL database of its own), an admin
client, a fresh project per test, and a CLI runner whose credentials file lives
in a temporary folder."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from ipacs.cli import app as cli_app
from ipacs.client import Client, Project
from ipacs.client.credentials import Credentials, write_file
from tests.test_server_e2e import (
    ADMIN_PASSWORD,
    Server,
    _database_url,
    _free_port,
    _wait_until_ready,
)

_names = itertools.count(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("client-e2e") / "ipacs-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
    env.update(
        {
            "IPACS_DATA_DIR": str(data_dir),
            "IPACS_HOST": "127.0.0.1",
            "IPACS_PORT": str(port),
            "IPACS_ADMIN_USERNAME": "admin",
            "IPACS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "IPACS_DICOM_PORT": "0",
            "IPACS_ARGON2_TIME_COST": "1",
            "IPACS_ARGON2_MEMORY_COST_KIB": "1024",
            "IPACS_ARGON2_PARALLELISM": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    with _database_url() as database_url:
        if database_url:
            env["IPACS_DATABASE_URL"] = database_url
        process = subprocess.Popen(
            [sys.executable, "-m", "ipacs", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running = Server(f"http://127.0.0.1:{port}", process, data_dir, database_url)
        try:
            _wait_until_ready(process, running.output)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert "Traceback" not in "".join(running.output), "".join(running.output)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.base_url, "admin", ADMIN_PASSWORD) as c:
        yield c


def unique(prefix: str) -> str:
    return f"{prefix} {os.getpid()}-{next(_names)}"


@pytest.fixture
def project(client: Client) -> Project:
    """A fresh top-level project with age (integer 0..120) and arm (choice A/B)."""
    created = client.projects.create(unique("Trial"))
    client.datapoints.create(created, "age", "integer", minimum=0, maximum=120)
    client.datapoints.create(created, "arm", "choice", choices=["A", "B"])
    return created


@dataclass
class Cli:
    """Runs `ipacs ...` in process, logged in through a credentials file of its own."""

    runner: CliRunner
    env: dict[str, str]
    config_dir: Path

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        return self.runner.invoke(cli_app, list(args), env=self.env, input=stdin, catch_exceptions=False)


@pytest.fixture
def cli(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    config_dir = tmp_path / "config"
    for name in ("IPACS_URL", "IPACS_USERNAME", "IPACS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_dir))
    write_file(Credentials(server.base_url, "admin", ADMIN_PASSWORD), config_dir / "ipacs" / "credentials")
    return Cli(CliRunner(), {"XDG_CONFIG_HOME": str(config_dir), "COLUMNS": "200"}, config_dir)


def subprocess_env(config_dir: Path) -> dict[str, str]:
    """The environment for an `ipacs` child process using the credentials in `config_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IPACS_")}
    env.update({"XDG_CONFIG_HOME": str(config_dir), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    return env
