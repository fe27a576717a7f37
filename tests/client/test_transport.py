"""Retries (against a tiny server that fails on purpose) and the credentials file."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ipacs.client import Client, ConnectionFailed, CredentialsError, RetryPolicy
from ipacs.client.credentials import Credentials, read_file, resolve, write_file
from ipacs.client.transport import Transport, parse_retry_after
from tests.test_server_e2e import _free_port


class FlakyServer:
    """Answers `failures` times with `status` (and Retry-After), then 200 with a user."""

    def __init__(self, failures: int, status: int = 503, retry_after: str | None = None) -> None:
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.requests <= outer.failures:
                    body = json.dumps({"success": False, "error": "x", "message": "busy", "details": []})
                    self.send_response(outer.status)
                    if outer.retry_after:
                        self.send_header("Retry-After", outer.retry_after)
                else:
                    body = json.dumps({"id": 1, "username": "admin"})
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FlakyServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _transport(url: str, delays: list[float], retries: int = 5) -> Transport:
    return Transport(
        url, "admin", "pw", retry=RetryPolicy(retries=retries, backoff=0.01), sleep=delays.append
    )


def test_503_twice_then_success_is_retried() -> None:
    delays: list[float] = []
    with FlakyServer(failures=2) as flaky:
        answer = _transport(flaky.url, delays).get_json("/users/me")
    assert answer["username"] == "admin"
    assert flaky.requests == 3
    assert len(delays) == 2 and delays[1] > delays[0]  # backoff grows


def test_429_honours_retry_after() -> None:
    delays: list[float] = []
    with FlakyServer(failures=2, status=429, retry_after="3") as flaky:
        _transport(flaky.url, delays).get_json("/users/me")
    assert delays == [3.0, 3.0]


def test_gives_up_after_the_retries_with_the_servers_error() -> None:
    delays: list[float] = []
    with FlakyServer(failures=10) as flaky, pytest.raises(Exception, match="busy") as raised:
        _transport(flaky.url, delays, retries=2).get_json("/users/me")
    assert getattr(raised.value, "status", None) == 503
    assert flaky.requests == 3


def test_connection_refused_is_retried_then_raised() -> None:
    delays: list[float] = []
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(ConnectionFailed, match="after 3 attempts"):
        _transport(url, delays, retries=2).get_json("/users/me")
    assert len(delays) == 2


def test_the_client_retries_too() -> None:
    with FlakyServer(failures=2) as flaky:
        with Client(flaky.url, "admin", "pw", retry=RetryPolicy(backoff=0.01)) as c:
            assert c.transport.get_json("/users/me")["id"] == 1
        assert flaky.requests == 3


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is not None
    assert parse_retry_after("soon") is None
    assert RetryPolicy(max_delay=5).delay(0, "3600") == 5


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("IPACS_URL", "IPACS_USERNAME", "IPACS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path / "ipacs" / "credentials"


def test_credentials_file_is_written_0600_and_read_back(config: Path) -> None:
    write_file(Credentials("http://h:1/api/v1.0/", "alice", None, "token"))
    assert (config.stat().st_mode & 0o777) == 0o600
    assert read_file() == Credentials("http://h:1", "alice", None, "token")
    assert resolve() == Credentials("http://h:1", "alice", None, "token")


def test_a_readable_credentials_file_is_refused(config: Path) -> None:
    write_file(Credentials("http://h:1", "alice", "secret", None))
    os.chmod(config, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        read_file()
    with pytest.raises(CredentialsError):
        Client.from_env()


def test_environment_wins_and_a_session_goes_only_to_its_server(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_file(Credentials("http://h:1", "alice", None, "token"))
    monkeypatch.setenv("IPACS_URL", "http://other:2")
    with pytest.raises(CredentialsError, match="Not logged in to http://other:2"):
        resolve()
    monkeypatch.setenv("IPACS_USERNAME", "bob")
    monkeypatch.setenv("IPACS_PASSWORD", "bob-password")
    assert resolve() == Credentials("http://other:2", "bob", "bob-password", None)
    monkeypatch.setenv("IPACS_URL", "http://h:1")
    monkeypatch.setenv("IPACS_USERNAME", "alice")
    assert resolve() == Credentials("http://h:1", "alice", "bob-password", "token")


def test_no_server_configured(config: Path) -> None:
    with pytest.raises(CredentialsError, match="ipacs login"):
        resolve()
