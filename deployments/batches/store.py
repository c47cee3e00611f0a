"""The job store: files, batches and each line's result, durable on disk.

Embedded by default: one SQLite database in WAL mode with ``synchronous=FULL`` under the
data directory, like the collections, so a write acknowledged is on disk and a crash at
any moment leaves all of a transaction or none of it; or the same tables in PostgreSQL
(``batch.backend: postgres``), so a batch outlives the node that ran its store
(``database.py`` speaks one SQL to both).

A line's life: ``pending`` → ``running`` (claimed by a runner, its attempt counted) →
``done`` (its output or error line stored, in one transaction with the batch's counts).
A line whose runner stopped calling (it died with its replica, or the whole graph was
killed) goes back to ``pending``; a line that is ``done`` is never run again. When no
line is left, the batch is finalized in the same transaction: its output and error
files are written and it is ``completed`` (or ``cancelled``, ``expired``).

Nothing read from disk is unpickled: rows are JSON and bytes.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

from deployments.batches.database import JobDatabase
from deployments.batches.input import InputLine, RefusedLine
from serve.kernel.batch_protocol import COMPLETION_WINDOWS, FINAL_STATUSES
from serve.kernel.protocol import new_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, status TEXT NOT NULL, object TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, body TEXT,
    state TEXT NOT NULL, ok INTEGER, result TEXT, attempts INTEGER NOT NULL DEFAULT 0, runner TEXT,
    PRIMARY KEY (batch_id, idx));
CREATE INDEX IF NOT EXISTS lines_by_state ON lines(state, batch_id, idx);
"""


class StoreConflict(Exception):
    """An action the batch's status does not allow (cancelling a finished batch)."""


#: A file's row as the API shows it (the content is read on its own).
_FILE_COLUMNS = ("id", "purpose", "filename", "bytes", "created_at")


def _newest_first(db: JobDatabase, table: str, columns: str, after: Optional[str], limit: int,
                  **equal: Optional[str]) -> list:
    """``limit + 1`` rows of ``table`` newest first (``created_at``, then id) after the row
    ``after``, those whose fields equal ``equal`` (a None value is no condition); the
    extra row says whether more follow. Table and column names are ours, never a caller's."""
    where, args = [], []
    for field, value in equal.items():
        if value is not None:
            where.append(f"{field} = ?")
            args.append(value)
    if after is not None:
        anchor = db.execute(f"SELECT created_at FROM {table} WHERE id = ?", (after,)).fetchone()
        if anchor is not None:
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [anchor[0], anchor[0], after]
    sql = (f"SELECT {columns} FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY created_at DESC, id DESC LIMIT ?")
    return db.execute(sql, (*args, limit + 1)).fetchall()


def _now() -> int:
    return int(time.time())


class JobStore:
    """Files, batches and line results in one SQLite database.

    Every method is a short transaction (call them from a worker thread: they touch the
    disk). ``runner_timeout_s`` is how long a runner may go without claiming before the
    lines it holds are given to others.
    """

    def __init__(self, where: Path | str | JobDatabase, *, runner_timeout_s: float = 15.0) -> None:
        self._db = JobDatabase.at(where)
        self._db.script(_SCHEMA)
        self._lock = threading.Lock()
        self._runner_timeout_s = runner_timeout_s
        self._started = time.monotonic()
        self._last_seen: dict[str, float] = {}

    def ping(self) -> None:
        """Raises when the database does not answer (readiness)."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ files
    def put_file(self, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
        """Store a file; its row (without the content)."""
        with self._lock, self._db.transaction():
            return self._insert_file(purpose, filename, content)

    def _insert_file(self, purpose: str, filename: str, content: bytes) -> dict[str, Any]:
        row = {"id": new_id("file-"), "purpose": purpose, "filename": filename, "bytes": len(content),
               "created_at": _now()}
        self._db.execute("INSERT INTO files (id, purpose, filename, bytes, created_at, content) VALUES (?, ?, ?, ?, ?, ?)",
                         (row["id"], purpose, filename, len(content), row["created_at"], content))
        return row

    def get_file(self, file_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            found = self._db.execute(f"SELECT {', '.join(_FILE_COLUMNS)} FROM files WHERE id = ?", (file_id,)).fetchone()
        return dict(zip(_FILE_COLUMNS, found)) if found else None

    def file_content(self, file_id: str) -> Optional[bytes]:
        with self._lock:
            found = self._db.execute("SELECT content FROM files WHERE id = ?", (file_id,)).fetchone()
        return bytes(found[0]) if found else None

    def list_files(self, *, purpose: Optional[str], after: Optional[str], limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Files newest first, ``limit`` of them after the file ``after``; and whether more follow."""
        with self._lock:
            rows = _newest_first(self._db, "files", ", ".join(_FILE_COLUMNS), after, limit, purpose=purpose)
        return [dict(zip(_FILE_COLUMNS, row)) for row in rows[:limit]], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        with self._lock, self._db.transaction():
            return self._db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    # ---------------------------------------------------------------- batches
    def create_batch(self, *, endpoint: str, input_file_id: str, completion_window: str,
                     metadata: Optional[dict[str, str]], lines: list[InputLine], refused: list[RefusedLine]) -> dict[str, Any]:
        """A new batch, ``in_progress``, with its lines to run and its refused lines already
        answered; finalized at once when no line can run."""
        now = _now()
        batch = {
            "id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": completion_window, "status": "in_progress",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": now,
            "expires_at": now + COMPLETION_WINDOWS[completion_window], "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": len(lines) + len(refused), "completed": 0, "failed": len(refused)},
            "metadata": metadata,
        }
        with self._lock, self._db.transaction():
            self._db.executemany(
                "INSERT INTO lines (batch_id, idx, custom_id, body, state) VALUES (?, ?, ?, ?, 'pending')",
                ((batch["id"], line.index, line.custom_id, json.dumps(line.body)) for line in lines))
            self._db.executemany(
                "INSERT INTO lines (batch_id, idx, custom_id, body, state, ok, result) VALUES (?, ?, ?, NULL, 'done', 0, ?)",
                ((batch["id"], line.index, line.custom_id, json.dumps(_refused_result(line))) for line in refused))
            self._save(batch)
            if not lines:
                self._finalize(batch, "completed")
        return batch

    def get_batch(self, batch_id: str) -> Optional[dict[str, Any]]:
        with self._lock:
            return self._load(batch_id)

    def list_batches(self, *, after: Optional[str], limit: int) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            rows = _newest_first(self._db, "batches", "object", after, limit)
        return [json.loads(row[0]) for row in rows[:limit]], len(rows) > limit

    def cancel(self, batch_id: str) -> Optional[dict[str, Any]]:
        """Stop taking the batch's lines; ``cancelled`` once none is running (None: no such batch).

        Raises:
            StoreConflict: the batch has already ended.
        """
        with self._lock, self._db.transaction():
            batch = self._load(batch_id)
            if batch is None:
                return None
            if batch["status"] in FINAL_STATUSES:
                raise StoreConflict(f"batch {batch_id} is {batch['status']}; only a running batch can be cancelled")
            if batch["status"] != "cancelling":
                batch["status"], batch["cancelling_at"] = "cancelling", _now()
                self._save(batch)
            self._settle(batch)
            return batch

    # ------------------------------------------------------------------ lines
    def claim(self, runner: str, capacity: int, held: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """Up to ``capacity`` lines for ``runner`` to run, oldest batch first.

        Each claim counts as the runner's sign of life (``capacity`` 0 claims nothing),
        and says which lines it still runs (``held``): a line the store has it running
        but it no longer holds (its answer was lost on the way here) is pending again.
        """
        now = time.monotonic()
        with self._lock, self._db.transaction():
            self._last_seen[runner] = now
            still = {(batch_id, index) for batch_id, index in held}
            lost = [row for row in self._db.execute("SELECT batch_id, idx FROM lines WHERE state = 'running' AND runner = ?",
                                                   (runner,)).fetchall() if tuple(row) not in still]
            self._db.executemany("UPDATE lines SET state = 'pending', runner = NULL WHERE batch_id = ? AND idx = ? "
                                 "AND state = 'running'", lost)
            self._requeue_abandoned(now)
            self._expire_overdue()
            if capacity <= 0:
                return []
            rows = self._db.execute(
                "SELECT l.batch_id, l.idx, l.custom_id, l.body, l.attempts FROM lines l JOIN batches b ON b.id = l.batch_id "
                "WHERE l.state = 'pending' AND b.status = 'in_progress' ORDER BY b.created_at, l.batch_id, l.idx LIMIT ?",
                (capacity,)).fetchall()
            for batch_id, idx, *_ in rows:
                self._db.execute("UPDATE lines SET state = 'running', runner = ?, attempts = attempts + 1 "
                                 "WHERE batch_id = ? AND idx = ?", (runner, batch_id, idx))
            batches = {batch_id: self._load(batch_id) for batch_id in {row[0] for row in rows}}
        return [{"batch_id": batch_id, "index": idx, "custom_id": custom_id, "body": json.loads(body),
                 "endpoint": batches[batch_id]["endpoint"], "metadata": batches[batch_id]["metadata"] or {},
                 "attempt": attempts + 1}
                for batch_id, idx, custom_id, body, attempts in rows]

    def release(self, runner: str, batch_id: str, index: int) -> None:
        """Give a line back to ``pending`` (it met a busy graph; it runs again later)."""
        with self._lock, self._db.transaction():
            self._last_seen[runner] = time.monotonic()
            self._db.execute("UPDATE lines SET state = 'pending', runner = NULL WHERE batch_id = ? AND idx = ? "
                             "AND state = 'running' AND runner = ?", (batch_id, index, runner))
            batch = self._load(batch_id)
            if batch is not None:
                self._settle(batch)

    def complete(self, runner: str, batch_id: str, index: int, *, ok: bool, result: dict[str, Any]) -> bool:
        """Store a line's output or error line, once: False when it was already done (a
        line requeued from a runner thought dead and finished by both)."""
        with self._lock, self._db.transaction():
            self._last_seen[runner] = time.monotonic()
            updated = self._db.execute(
                "UPDATE lines SET state = 'done', ok = ?, result = ?, body = NULL WHERE batch_id = ? AND idx = ? "
                "AND state != 'done'", (int(ok), json.dumps(result), batch_id, index)).rowcount
            if not updated:
                return False
            batch = self._load(batch_id)
            batch["request_counts"]["completed" if ok else "failed"] += 1
            self._save(batch)
            self._settle(batch)
            return True

    def attempts(self, batch_id: str) -> dict[str, int]:
        """How many times each line was started, by ``custom_id`` (drills and tests)."""
        with self._lock:
            return dict(self._db.execute("SELECT custom_id, attempts FROM lines WHERE batch_id = ?", (batch_id,)).fetchall())

    def _requeue_abandoned(self, now: float) -> None:
        """Lines held by a runner not seen for ``runner_timeout_s`` (or by one this store has
        never seen, once it has been up that long) go back to ``pending``."""
        stale = [runner for runner, seen in self._last_seen.items() if now - seen > self._runner_timeout_s]
        for runner in stale:
            del self._last_seen[runner]
        held = {row[0] for row in self._db.execute("SELECT DISTINCT runner FROM lines WHERE state = 'running'")}
        unknown = [runner for runner in held if runner not in self._last_seen]
        if unknown and now - self._started > self._runner_timeout_s:
            self._db.executemany("UPDATE lines SET state = 'pending', runner = NULL WHERE state = 'running' AND runner = ?",
                                 ((runner,) for runner in unknown))
            for batch_id in {row[0] for row in self._db.execute("SELECT id FROM batches WHERE status = 'cancelling'")}:
                self._settle(self._load(batch_id))

    def _expire_overdue(self) -> None:
        for (batch_id,) in self._db.execute("SELECT id FROM batches WHERE status = 'in_progress'").fetchall():
            batch = self._load(batch_id)
            if batch["expires_at"] <= _now():
                self._finalize(batch, "expired")

    # -------------------------------------------------------------- finishing
    def _settle(self, batch: dict[str, Any]) -> None:
        """Finalize ``batch`` when nothing of it is left to run (or, cancelling, running)."""
        open_states = ("running",) if batch["status"] == "cancelling" else ("pending", "running")
        left = self._db.execute(f"SELECT COUNT(*) FROM lines WHERE batch_id = ? AND state IN ({','.join('?' * len(open_states))})",
                                (batch["id"], *open_states)).fetchone()[0]
        if not left and batch["status"] in ("in_progress", "cancelling"):
            self._finalize(batch, "cancelled" if batch["status"] == "cancelling" else "completed")

    def _finalize(self, batch: dict[str, Any], status: str) -> None:
        """Write the output and error files and end the batch as ``status``. Lines not run
        (a cancelled or expired batch) are answered in the error file when it expired,
        and left out when it was cancelled, as OpenAI does."""
        now = _now()
        batch["finalizing_at"] = now
        if status == "expired":
            for idx, custom_id in self._db.execute("SELECT idx, custom_id FROM lines WHERE batch_id = ? AND state != 'done'",
                                                   (batch["id"],)).fetchall():
                self._db.execute("UPDATE lines SET state = 'done', ok = 0, result = ?, body = NULL WHERE batch_id = ? AND idx = ?",
                                 (json.dumps(_error_line(custom_id, "batch_expired", "the batch expired before this request ran")),
                                  batch["id"], idx))
                batch["request_counts"]["failed"] += 1
        else:
            self._db.execute("UPDATE lines SET state = 'done', ok = NULL, body = NULL WHERE batch_id = ? AND state != 'done'",
                             (batch["id"],))
        outputs = self._db.execute("SELECT ok, result FROM lines WHERE batch_id = ? AND result IS NOT NULL ORDER BY idx",
                                   (batch["id"],)).fetchall()
        for ok, key in ((1, "output_file_id"), (0, "error_file_id")):
            content = "".join(result + "\n" for flag, result in outputs if flag == ok).encode()
            if content:
                suffix = "output" if ok else "error"
                batch[key] = self._insert_file("batch_output", f"{batch['id']}_{suffix}.jsonl", content)["id"]
        batch["status"] = status
        batch[{"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[status]] = now
        self._save(batch)

    def _load(self, batch_id: str) -> Optional[dict[str, Any]]:
        row = self._db.execute("SELECT object FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def _save(self, batch: dict[str, Any]) -> None:
        self._db.execute("INSERT INTO batches (id, created_at, status, object) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(id) DO UPDATE SET status = excluded.status, object = excluded.object",
                         (batch["id"], batch["created_at"], batch["status"], json.dumps(batch)))


def _error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {"id": new_id("batch_req_"), "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}


def _refused_result(line: RefusedLine) -> dict[str, Any]:
    return _error_line(line.custom_id, line.code, line.message)

