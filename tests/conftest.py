"""Test fixtures: a real database (SQLite file, or PostgreSQL from
IPACS_TEST_DATABASE_URL), migrated once per run with Alembic, and the real app.

Isolation: after each test every table is emptied. (A rolled-back outer
transaction would be faster, but the app opens transactions of its own —
authentication, streamed responses, the DICOM receiver — exactly as in
production, and we test that code unchanged.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from ipacs import clock
from ipacs.app import create_app
from ipacs.config import Settings
from ipacs.db.engine import Database
from ipacs.db.migrate import upgrade_to_head
from ipacs.models import Base

# Cheap Argon2id for tests: the algorithm is the same, the cost is not.
CHEAP_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_cost_kib": 1024, "argon2_parallelism": 1}


def _reset_postgres(database: Database) -> None:
    with database.engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("IPACS_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    if not db.is_sqlite:
        _reset_postgres(db)
    upgrade_to_head(db.engine)
    yield db
    db.dispose()


def _empty_all_tables(database: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with database.engine.begin() as conn:
        if database.is_sqlite:
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
        else:
            conn.execute(
                text("TRUNCATE " + ", ".join(f'"{n}"' for n in tables) + " RESTART IDENTITY CASCADE")
            )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        dicom_port=0,
        **CHEAP_ARGON2,  # type: ignore[arg-type]
    )


@pytest.fixture
def app(settings: Settings, database: Database) -> Iterator[FastAPI]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    yield create_app(settings, database=database)
    _empty_all_tables(database)


@pytest.fixture
def db(app: FastAPI, database: Database) -> Iterator[Session]:
    """A session for arranging data and checking results; commit what you arrange."""
    with database.session(write=True) as session:
        yield session


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """An HTTP client without credentials (each test picks its own)."""
    with TestClient(app, base_url="http://testserver") as c:
        yield c


class FakeClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs: float) -> None:
        self.current += timedelta(**kwargs)


@pytest.fixture
def fake_clock() -> Iterator[FakeClock]:
    fake = FakeClock()
    clock.set_clock(fake)
    yield fake
    clock.set_clock(None)
