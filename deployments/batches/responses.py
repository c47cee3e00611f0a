"""Stored responses of the Responses API, in the job store's database.

A response is stored with what a later turn needs (``previous_response_id``): the
conversation so far as items, so a chain is one read however long it is, and survives
a restart like a batch does (SQLite WAL, ``synchronous=FULL``, one transaction per
write). Each row carries its owner, a digest of the API key that created it, never the
key: another key asking for it gets the same answer as for an id that does not exist.
Rows are JSON; nothing is unpickled.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Optional

from deployments.batches.database import JobDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL, depth INTEGER NOT NULL,
    response TEXT NOT NULL, input_items TEXT NOT NULL, conversation TEXT NOT NULL);
"""


class ResponseStore:
    """Stored responses in the job store's database (its own table): SQLite under a
    directory, or PostgreSQL (a URL).

    Every method is a short transaction; call them from a worker thread.
    """

    def __init__(self, where: Path | str | JobDatabase) -> None:
        self._db = JobDatabase.at(where)
        self._db.script(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, record: dict[str, Any]) -> None:
        """Store a response (``id``, ``owner``, ``created_at``, ``depth``, ``response``,
        ``input_items``, ``conversation``); durable when this returns."""
        row = (record["id"], record["owner"], int(record["created_at"]), int(record["depth"]),
               json.dumps(record["response"]), json.dumps(record["input_items"]), json.dumps(record["conversation"]))
        with self._lock, self._db.transaction():
            self._db.execute("INSERT INTO responses (id, owner, created_at, depth, response, input_items, conversation) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET response = excluded.response",
                             row)

    def get(self, response_id: str, owner: str) -> Optional[dict[str, Any]]:
        """The stored record, or None (no such id, or another owner's)."""
        with self._lock:
            row = self._db.execute("SELECT id, created_at, depth, response, input_items, conversation FROM responses "
                                   "WHERE id = ? AND owner = ?", (response_id, owner)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "created_at": row[1], "depth": row[2], "response": json.loads(row[3]),
                "input_items": json.loads(row[4]), "conversation": json.loads(row[5])}

    def delete(self, response_id: str, owner: str) -> bool:
        with self._lock, self._db.transaction():
            return self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner)).rowcount > 0
