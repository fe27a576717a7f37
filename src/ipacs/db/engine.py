"""One engine and one session factory per process.

SQLite is tuned for many readers and one writer: WAL journal, a busy timeout,
foreign keys on. Sessions opened with `write=True` begin with BEGIN IMMEDIATE,
so two writers queue on the lock instead of one failing with "database is
locked" when it upgrades a read lock half way through its transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

WRITE_OPTION = "ipacs_write"


def make_engine(url: str, *, sqlite_busy_timeout_ms: int = 30000, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        # Kept for the request threads (up to 40) and the receiver's associations: a connection
        # made past the pool is closed on return, and its PRAGMAs run again on the next one.
        if ":memory:" not in url and url != "sqlite://" and "poolclass" not in kwargs:
            kwargs.setdefault("pool_size", 20)
            kwargs.setdefault("max_overflow", 40)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
            **kwargs,
        )
        _tune_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql"):
        # No JIT compilation: it starts above an estimated cost that a search's correlated
        # subqueries pass at once (the planner costs each as if run for every row), and then
        # compiling took 2 s of a 4.7 s CSV export of 20,000 rows, longer than most queries run.
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args["options"] = f"{connect_args.get('options', '')} -c jit=off".strip()
    return create_engine(url, **kwargs)


def _tune_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we acknowledge it (a C-STORE
        # success or a 201 must survive a power cut, not only a crash).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver: every transaction starts here, and exec_driver_sql's
        # statement machinery cost more than the BEGIN itself (py-spy, GET by cookie).
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """The process's engine and its session factory."""

    def __init__(self, url: str, *, sqlite_busy_timeout_ms: int = 30000, **kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms, **kwargs)
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        # expire_on_commit=False: endpoints build their response from objects
        # after the edge has committed.
        self._factory = sessionmaker(expire_on_commit=False, autoflush=True)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def session(self, *, write: bool = False) -> Session:
        """A new session; `write=True` when the transaction will write."""
        return self._factory(bind=self._write_engine if write else self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
