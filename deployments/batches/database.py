"""The job store's database: SQLite under the data directory, or a PostgreSQL server.

The job store (``store.py``) and the stored responses (``responses.py``) are written in
one SQL that both databases run; this connection speaks it to either: ``?``
placeholders become psycopg's ``%s``, binary columns are ``BLOB`` or ``BYTEA``, and a
transaction is explicit (SQLite: ``BEGIN IMMEDIATE`` … ``COMMIT``, so a batch's last
answer and its finalization are one atomic write; PostgreSQL: psycopg's transaction
block). SQLite runs in WAL mode with ``synchronous=FULL``: a committed write is on disk.

A URL comes from a secret (``LLMGRAPH_POSTGRES_URL_FILE``); it is never logged.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from serve.kernel.errors import error_reason

logger = logging.getLogger("ray.serve")


class DatabaseUnavailable(Exception):
    """The PostgreSQL server cannot be reached or used (its message names why, never the URL)."""


class JobDatabase:
    """One connection, used by one store at a time (each call holds its lock). A lost
    PostgreSQL connection raises :class:`DatabaseUnavailable` and is made again on the
    next call."""

    def __init__(self, connection: Any, *, postgres: bool, url: str = "") -> None:
        self._connection = connection
        self.postgres = postgres
        self._url = url
        self._lock = threading.RLock()
        self._schemas: list[str] = []

    @property
    def _db(self) -> Any:
        """The connection; a new PostgreSQL one gets every schema applied first."""
        if self.postgres and (self._connection is None or self._connection.closed):
            connection = _connect(self._url)
            for schema in self._schemas:
                for statement in _statements(schema):
                    connection.execute(self._sql(statement))
            self._connection = connection
        return self._connection

    @classmethod
    def sqlite(cls, directory: Path) -> "JobDatabase":
        """``<directory>/jobs.sqlite3`` (created), WAL with full sync."""
        directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(directory / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return cls(db, postgres=False)

    @classmethod
    def postgres_at(cls, url: str) -> "JobDatabase":
        """A PostgreSQL database; connected on first use, so the graph starts while it is down."""
        return cls(None, postgres=True, url=url)

    @classmethod
    def at(cls, where: "Path | str | JobDatabase") -> "JobDatabase":
        """A database for ``where``: itself, a PostgreSQL URL, or a directory for SQLite."""
        if isinstance(where, JobDatabase):
            return where
        if isinstance(where, str) and where.startswith(("postgresql://", "postgres://")):
            return cls.postgres_at(where)
        return cls.sqlite(Path(where))

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s").replace("BLOB", "BYTEA") if self.postgres else sql

    def script(self, schema: str) -> None:
        """Apply ``schema`` (``CREATE … IF NOT EXISTS`` statements separated by ``;``), now
        and on every new PostgreSQL connection (a server down at start gets it later)."""
        with self._lock:
            self._schemas.append(schema)
            if not self.postgres:
                for statement in _statements(schema):
                    self._connection.execute(statement)
                return
            if self._connection is not None and not self._connection.closed:
                for statement in _statements(schema):
                    self._connection.execute(self._sql(statement))
                return
            try:
                self._db
            except DatabaseUnavailable as exc:
                logger.error("job store: %s (requests get 503 until it answers)", exc)

    def execute(self, sql: str, args: Iterable[Any] = ()) -> Any:
        with self._lock, self._lost_connection():
            return self._db.execute(self._sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self._lock, self._lost_connection():
            if self.postgres:
                with self._db.cursor() as cursor:
                    cursor.executemany(self._sql(sql), [tuple(row) for row in rows])
            else:
                self._db.executemany(sql, rows)

    @contextmanager
    def _lost_connection(self) -> Iterator[None]:
        if not self.postgres:
            yield
            return
        import psycopg

        try:
            yield
        except psycopg.OperationalError as exc:
            if self._connection is not None:
                self._connection.close()
            raise DatabaseUnavailable(f"PostgreSQL connection lost: {error_reason(exc)}") from None

    @contextmanager
    def transaction(self) -> Iterator["JobDatabase"]:
        """All statements inside commit together, or none does."""
        with self._lock:
            if self.postgres:
                with self._lost_connection(), self._db.transaction():
                    yield self
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()


def _statements(schema: str) -> list[str]:
    return [statement for statement in schema.split(";") if statement.strip()]


def _connect(url: str) -> Any:
    import psycopg

    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"PostgreSQL refused the connection: {error_reason(exc)}") from None
