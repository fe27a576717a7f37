"""The `ipacs` command line: accounts and the first-start administrator.

Each test gets its own SQLite database in a temporary directory, named through
the same IPACS_* variables an operator would set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from click.testing import Result
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from ipacs import cli
from ipacs.auth.passwords import Passwords
from ipacs.config import Settings, get_settings
from ipacs.db.engine import Database
from ipacs.models import User

CHEAP_ARGON2_ENV = {
    "IPACS_ARGON2_TIME_COST": "1",
    "IPACS_ARGON2_MEMORY_COST_KIB": "1024",
    "IPACS_ARGON2_PARALLELISM": "1",
}


@dataclass
class Stored:
    username: str
    password_hash: str
    is_admin: bool
    is_active: bool
    full_name: str


@dataclass
class CliEnv:
    env: dict[str, str | None]
    url: str

    def run(self, *args: str, stdin: str | None = None) -> Result:
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(cli.app, list(args), input=stdin, env=self.env)
        finally:
            get_settings.cache_clear()

    def settings(self) -> Settings:
        return Settings(database_url=self.url, argon2_time_cost=1, argon2_memory_cost_kib=1024)

    def users(self) -> dict[str, Stored]:
        database = Database(self.url)
        try:
            if not inspect(database.engine).has_table("users"):
                return {}  # no command has created the schema yet
            with database.session() as session:
                return {
                    u.username: Stored(u.username, u.password_hash, u.is_admin, u.is_active, u.full_name)
                    for u in session.scalars(select(User))
                }
        finally:
            database.dispose()

    def password_ok(self, username: str, password: str) -> bool:
        return Passwords(self.settings()).verify(self.users()[username].password_hash, password)


@pytest.fixture
def ipacs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliEnv]:
    # Whatever the developer's shell exports must not leak into these tests.
    for name in ("IPACS_ADMIN_PASSWORD", "IPACS_ADMIN_USERNAME", "IPACS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env: dict[str, str | None] = {
        "IPACS_DATA_DIR": str(tmp_path / "data"),
        "IPACS_DATABASE_URL": url,
        **CHEAP_ARGON2_ENV,
    }
    get_settings.cache_clear()
    yield CliEnv(env, url)
    get_settings.cache_clear()


# -- ipacs user ... --------------------------------------------------------------------------------


def test_create_with_password_from_stdin_on_a_fresh_database(ipacs: CliEnv) -> None:
    r = ipacs.run(
        "user", "create", "alice", "--full-name", "Alice L", "--password-stdin", stdin="s3cret-pw\n"
    )
    assert r.exit_code == 0, r.output
    assert "created user alice" in r.output
    alice = ipacs.users()["alice"]
    assert (alice.is_admin, alice.is_active, alice.full_name) == (False, True, "Alice L")
    assert alice.password_hash.startswith("$argon2id$")
    assert ipacs.password_ok("alice", "s3cret-pw")
    assert not ipacs.password_ok("alice", "s3cret-pw\n")


def test_create_admin(ipacs: CliEnv) -> None:
    r = ipacs.run("user", "create", "boss", "--admin", "--password-stdin", stdin="boss-pw-1\n")
    assert r.exit_code == 0, r.output
    assert ipacs.users()["boss"].is_admin is True


def test_create_with_prompted_password(ipacs: CliEnv) -> None:
    r = ipacs.run("user", "create", "alice", stdin="prompted-pw\nprompted-pw\n")
    assert r.exit_code == 0, r.output
    assert "prompted-pw" not in r.output  # hidden input is not echoed
    assert ipacs.password_ok("alice", "prompted-pw")


def test_password_is_never_an_argument(ipacs: CliEnv) -> None:
    for args in (
        ("user", "create", "alice", "s3cret-pw"),
        ("user", "create", "alice", "--password", "s3cret-pw"),
        ("user", "passwd", "alice", "s3cret-pw"),
    ):
        r = ipacs.run(*args, stdin="")
        assert r.exit_code == 2, (args, r.output)
    assert ipacs.run("user", "list").exit_code == 0
    assert ipacs.users() == {}


@pytest.mark.parametrize("password", ["", "short", "7-chars"])
def test_short_password_is_refused(ipacs: CliEnv, password: str) -> None:
    r = ipacs.run("user", "create", "alice", "--password-stdin", stdin=password + "\n")
    assert r.exit_code == 1
    assert "at least 8 characters" in r.output
    assert "alice" not in ipacs.users()


def test_invalid_username_is_refused(ipacs: CliEnv) -> None:
    r = ipacs.run("user", "create", "no spaces", "--password-stdin", stdin="s3cret-pw\n")
    assert r.exit_code == 1
    assert "username" in r.output
    assert ipacs.users() == {}


def test_duplicate_user_is_refused(ipacs: CliEnv) -> None:
    assert ipacs.run("user", "create", "alice", "--password-stdin", stdin="s3cret-pw\n").exit_code == 0
    r = ipacs.run("user", "create", "alice", "--password-stdin", stdin="other-pw-1\n")
    assert r.exit_code == 1
    assert "already exists" in r.output
    assert ipacs.password_ok("alice", "s3cret-pw")


def test_list(ipacs: CliEnv) -> None:
    ipacs.run("user", "create", "alice", "--full-name", "Alice L", "--password-stdin", stdin="s3cret-pw\n")
    ipacs.run("user", "create", "boss", "--admin", "--password-stdin", stdin="boss-pw-1\n")
    ipacs.run("user", "disable", "alice")
    r = ipacs.run("user", "list")
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[2].strip(): line for line in r.output.splitlines() if line.count("│") >= 5}
    assert set(rows) == {"alice", "boss"}
    assert re.search(r"│\s*no\s*│$", rows["alice"])
    assert re.search(r"│\s*yes\s*│\s*yes\s*│$", rows["boss"])
    assert "$argon2" not in r.output


def test_passwd(ipacs: CliEnv) -> None:
    ipacs.run("user", "create", "alice", "--password-stdin", stdin="old-password\n")
    r = ipacs.run("user", "passwd", "alice", "--password-stdin", stdin="new-password\n")
    assert r.exit_code == 0, r.output
    assert ipacs.password_ok("alice", "new-password")
    assert not ipacs.password_ok("alice", "old-password")
    r = ipacs.run("user", "passwd", "alice", "--password-stdin", stdin="tiny\n")
    assert r.exit_code == 1
    assert ipacs.password_ok("alice", "new-password")


def test_passwd_of_unknown_user(ipacs: CliEnv) -> None:
    r = ipacs.run("user", "passwd", "nobody", "--password-stdin", stdin="new-password\n")
    assert r.exit_code == 1
    assert "nobody" in r.output


def test_disable_and_enable(ipacs: CliEnv) -> None:
    ipacs.run("user", "create", "alice", "--password-stdin", stdin="s3cret-pw\n")
    r = ipacs.run("user", "disable", "alice")
    assert r.exit_code == 0, r.output
    assert ipacs.users()["alice"].is_active is False
    r = ipacs.run("user", "enable", "alice")
    assert r.exit_code == 0, r.output
    assert ipacs.users()["alice"].is_active is True
    for command in ("disable", "enable"):
        r = ipacs.run("user", command, "nobody")
        assert r.exit_code == 1
        assert "nobody" in r.output


def test_last_admin_cannot_be_disabled(ipacs: CliEnv) -> None:
    ipacs.run("user", "create", "boss", "--admin", "--password-stdin", stdin="boss-pw-1\n")
    r = ipacs.run("user", "disable", "boss")
    assert r.exit_code == 1
    assert "last active administrator" in r.output
    assert ipacs.users()["boss"].is_active is True
    ipacs.run("user", "create", "boss2", "--admin", "--password-stdin", stdin="boss-pw-2\n")
    assert ipacs.run("user", "disable", "boss").exit_code == 0


def test_db_upgrade(ipacs: CliEnv) -> None:
    r = ipacs.run("db", "upgrade")
    assert r.exit_code == 0, r.output
    assert ipacs.users() == {}
    # Idempotent.
    assert ipacs.run("db", "upgrade").exit_code == 0


# -- first start: the administrator ----------------------------------------------------------------


def _first_start(monkeypatch: pytest.MonkeyPatch, ipacs: CliEnv, admin_password: str | None = None) -> None:
    for name, value in ipacs.env.items():
        assert value is not None
        monkeypatch.setenv(name, value)
    if admin_password is None:
        monkeypatch.delenv("IPACS_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("IPACS_ADMIN_PASSWORD", admin_password)
    get_settings.cache_clear()
    try:
        cli.prepare_database(get_settings())
    finally:
        get_settings.cache_clear()


def test_first_start_with_admin_password(
    ipacs: CliEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _first_start(monkeypatch, ipacs, "chosen-admin-pw")
    out = capsys.readouterr()
    assert "chosen-admin-pw" not in out.out + out.err
    assert "password" not in out.out + out.err
    admin = ipacs.users()["admin"]
    assert admin.is_admin and admin.is_active
    assert ipacs.password_ok("admin", "chosen-admin-pw")


def test_first_start_admin_username_is_configurable(ipacs: CliEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPACS_ADMIN_USERNAME", "keeper")
    _first_start(monkeypatch, ipacs, "chosen-admin-pw")
    assert set(ipacs.users()) == {"keeper"}


def test_first_start_without_admin_password_prints_a_random_one_once(
    ipacs: CliEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _first_start(monkeypatch, ipacs)
    out = capsys.readouterr()
    match = re.search(r"with password: (\S+)", out.err)
    assert match, out.err
    generated = match.group(1)
    assert len(generated) >= 16
    assert ipacs.password_ok("admin", generated)
    # A second start finds the administrator and prints nothing about it.
    _first_start(monkeypatch, ipacs)
    again = capsys.readouterr()
    assert "password" not in again.out + again.err
    assert ipacs.password_ok("admin", generated)
    # Another database gets another password: there is no built-in default.
    other = CliEnv({**ipacs.env, "IPACS_DATABASE_URL": ipacs.url + "-2"}, ipacs.url + "-2")
    _first_start(monkeypatch, other)
    second = re.search(r"with password: (\S+)", capsys.readouterr().err)
    assert second and second.group(1) != generated


def test_first_start_does_not_touch_an_existing_admin(
    ipacs: CliEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ipacs.run("user", "create", "boss", "--admin", "--password-stdin", stdin="boss-pw-1\n")
    _first_start(monkeypatch, ipacs, "chosen-admin-pw")
    assert set(ipacs.users()) == {"boss"}
    assert "password" not in capsys.readouterr().err


def test_first_start_refuses_a_short_admin_password(
    ipacs: CliEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        _first_start(monkeypatch, ipacs, "short")
    assert exit_info.value.exit_code == 1
    assert "at least 8 characters" in capsys.readouterr().err
    assert ipacs.users() == {}
