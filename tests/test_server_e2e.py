"""End to end: the real `ipacs serve` process, driven over loopback by curl and by httpx.

On PostgreSQL (IPACS_TEST_DATABASE_URL) the server gets a database of its own,
created next to the test database and dropped afterwards, so that it never
races the other tests, which empty the test database between tests.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

ADMIN_PASSWORD = "e2e-admin-password"
START_TIMEOUT = 60.0
READY_LINE = "Application startup complete"


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[str]
    data_dir: Path
    database_url: str | None
    output: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _own_postgres_database(test_url: str) -> Iterator[str]:
    """A fresh database on the test server, named after the test database, dropped on exit."""
    base = make_url(test_url)
    name = f"{base.database}_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def _database_url() -> Iterator[str | None]:
    test_url = os.environ.get("IPACS_TEST_DATABASE_URL")
    if not test_url:
        yield None  # the server's embedded SQLite in its data directory
        return
    with _own_postgres_database(test_url) as url:
        yield url


def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)
    lines.put(None)


def _wait_until_ready(process: subprocess.Popen[str], output: list[str]) -> None:
    """Read the server's console until uvicorn says it is serving (or the process dies)."""
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            pytest.fail("server did not start:\n" + "".join(output))
        if line is None:
            pytest.fail(f"server exited with {process.wait()}:\n" + "".join(output))
        output.append(line)
        if READY_LINE in line:
            # Keep draining in the background so that the pipe never fills.
            threading.Thread(target=_drain, args=(lines, output), daemon=True).start()
            return


def _drain(lines: queue.Queue[str | None], output: list[str]) -> None:
    while (line := lines.get()) is not None:
        output.append(line)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    data_dir = tmp_path_factory.mktemp("e2e") / "ipacs-data"
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


def test_operations_endpoints_answer(server: Server) -> None:
    # The first requests to a fresh process: the OpenAPI document is built on demand.
    r = httpx.get(server.url("/api/v1.0/openapi.json"))
    assert r.status_code == 200
    document = r.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1.0/users/me" in document["paths"]
    r = httpx.get(server.url("/api/v1.0/docs"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/api/v1.0/openapi.json" in r.text
    r = httpx.get(server.url("/healthz"))
    assert (r.status_code, r.text) == (200, "ok")


def test_server_uses_the_configured_database(server: Server) -> None:
    if server.database_url is None:
        assert (server.data_dir / "ipacs.db").is_file()
        return
    assert not (server.data_dir / "ipacs.db").exists()
    engine = create_engine(server.database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            admins = conn.scalar(text("SELECT count(*) FROM users WHERE username = 'admin' AND is_admin"))
    finally:
        engine.dispose()
    assert admins == 1


def _curl(*args: str) -> tuple[int, str]:
    """Run curl; return the HTTP status and the body."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_contract_seed_flow_with_curl(server: Server, tmp_path: Path) -> None:
    """The contract's two commands, verbatim but for host and credentials."""
    projects = server.url("/api/v1.0/projects")
    jar = str(tmp_path / "cookie.jar")
    status, body = _curl("-c", jar, "--user", f"admin:{ADMIN_PASSWORD}", projects)
    assert status == 200, body
    assert isinstance(json.loads(body), list)
    status, body = _curl("-b", jar, projects)
    assert status == 200, body
    assert isinstance(json.loads(body), list)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_flow_with_curl_and_a_cookie_jar(server: Server, tmp_path: Path) -> None:
    me = server.url("/api/v1.0/users/me")
    jar = str(tmp_path / "cookie.jar")
    status, body = _curl("-c", jar, "--user", f"admin:{ADMIN_PASSWORD}", me)
    assert status == 200, body
    assert json.loads(body)["username"] == "admin"
    assert "ipacs_session" in Path(jar).read_text()
    # The cookie alone, no credentials.
    status, body = _curl("-b", jar, me)
    assert status == 200, body
    assert json.loads(body)["username"] == "admin"
    # Neither: 401 with the error body.
    status, body = _curl(me)
    assert status == 401
    assert json.loads(body)["error"] == "unauthorized"
    status, body = _curl("--user", "admin:wrong-password", me)
    assert status == 401
    # Create a user with the cookie (curl --json sends Content-Type: application/json).
    status, body = _curl(
        "-b",
        jar,
        "--json",
        '{"username": "alice", "password": "alice-password"}',
        server.url("/api/v1.0/users"),
    )
    assert status == 201, body
    status, body = _curl("--user", "alice:alice-password", me)
    assert status == 200 and json.loads(body)["projects"] == []
    # Logout ends the session the jar holds.
    status, body = _curl("-b", jar, "-X", "POST", server.url("/api/v1.0/logout"))
    assert status == 200 and json.loads(body)["success"] is True
    status, _ = _curl("-b", jar, me)
    assert status == 401


def test_seed_flow_with_httpx(server: Server) -> None:
    me = "/api/v1.0/users/me"
    with httpx.Client(base_url=server.base_url) as client:
        r = client.get(me, auth=("admin", ADMIN_PASSWORD))
        assert r.status_code == 200
        assert "ipacs_session" in client.cookies
        set_cookie = r.headers["set-cookie"]
        for flag in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert flag in set_cookie
        r = client.get(me)
        assert r.status_code == 200
        assert r.json()["username"] == "admin"
        assert "set-cookie" not in r.headers
        r = client.get("/api/v1.0/users", params={"limit": 1})
        assert r.status_code == 200
        assert int(r.headers["x-total-count"]) >= 1
    with httpx.Client(base_url=server.base_url) as stranger:
        r = stranger.get(me)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="iPACS"'
        r = stranger.get("/api/v1.0/nowhere")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
