"""Durable document collections: SQLite for the records, FAISS snapshots for search.

Durability comes from SQLite, not from hand-written file code: each write is one
transaction in WAL mode with ``synchronous=FULL``, so when a write is acknowledged it is
on disk, and a crash at any moment leaves either all of it or none of it. The ``ops``
table is the collection's append-only journal (which chunks each write added or
removed; chunk ids are AUTOINCREMENT, so one is never reused); the FAISS index is a
cache of the chunks table, snapshotted atomically (``snapshots.py``: temp file, fsync,
rename) with a SHA-256 manifest naming the last journal entry it covers.
Opening a collection loads the newest snapshot whose checksum matches and replays the
journal after it; a database or snapshot that fails its check is moved to
``quarantine/`` and reported, never half-loaded (a bad snapshot is rebuilt from the
database, which holds every vector).

Nothing read from disk is unpickled: metadata is JSON, vectors are raw float32, the
index is FAISS's own format.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from deployments.collections import snapshots
from deployments.collections.chunking import chunk_spans
from deployments.collections.index import IndexParams, VectorIndex
from serve.kernel.protocol import COLLECTION_NAME_RULE, valid_collection_name

if TYPE_CHECKING:
    from serve.kernel.config import CollectionsSpec, EmbedderSpec

logger = logging.getLogger("ray.serve")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, text TEXT NOT NULL, metadata TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, position INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, added TEXT NOT NULL, removed TEXT NOT NULL);
"""


class StoreError(Exception):
    """A collection that cannot be used as asked (status says which 4xx)."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request", param: Optional[str] = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.param = message, status, code, param


@dataclass(frozen=True)
class StoreParams:
    """Profile settings that shape every collection (built by :meth:`from_spec`, so the
    defaults stay in the profile's spec)."""

    index: IndexParams
    model_id: str
    chunk_chars: int
    chunk_overlap: int
    snapshot_every_ops: int

    @classmethod
    def from_spec(cls, collections: "CollectionsSpec", embedder: "EmbedderSpec") -> "StoreParams":
        return cls(index=IndexParams.from_spec(collections, embedder.dimensions), model_id=embedder.model_id,
                   chunk_chars=collections.chunk_chars, chunk_overlap=collections.chunk_overlap,
                   snapshot_every_ops=collections.snapshot_every_ops)


@dataclass
class Hit:
    doc_id: str
    score: float
    text: str
    metadata: dict[str, Any]
    chunk: dict[str, int]


def _open_database(directory: Path, params: StoreParams) -> sqlite3.Connection:
    """The collection's SQLite database in WAL mode with full sync, checked before use.

    Raises:
        StoreError: ``corrupt`` when it fails its integrity check, ``embedder_mismatch``
            when it was built with another embedding model.
    """
    name = directory.name
    db = sqlite3.connect(directory / "store.sqlite", check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        status = db.execute("PRAGMA quick_check").fetchone()[0]
        if status != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {status}")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"collection {name!r} failed its integrity check ({exc})", status=500, code="corrupt") from exc
    stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
    expected = {"model_id": params.model_id, "dimensions": str(params.index.dimensions)}
    if not stored:
        with db:
            db.executemany("INSERT INTO meta VALUES (?, ?)", expected.items())
    elif {k: stored.get(k) for k in expected} != expected:
        db.close()
        raise StoreError(
            f"collection {name!r} was built with {stored.get('model_id')} ({stored.get('dimensions')}-d); "
            f"this graph embeds with {params.model_id}", status=409, code="embedder_mismatch",
        )
    return db


class Collection:
    """One named collection in its own directory. Thread-safe; writes are serialized."""

    def __init__(self, directory: Path, params: StoreParams, *, quarantine: Callable[[Path, str], None]) -> None:
        self.directory = directory
        self.name = directory.name
        self._params = params
        self._quarantine = quarantine
        self._lock = threading.RLock()
        self._snapshot_lock = threading.Lock()  # one snapshot at a time (writes and the timer)
        self._ops_since_snapshot = 0
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()  # a snapshot interrupted before its rename
        self._db = _open_database(directory, params)
        self._chunk_doc: dict[int, str] = {}
        self._doc_meta: dict[str, dict[str, Any]] = {}
        self._doc_chunks: dict[str, list[int]] = {}
        self._load_rows()
        self._index = self._load_index()

    # ---------------------------------------------------------------- opening
    def _load_rows(self) -> None:
        for doc_id, metadata in self._db.execute("SELECT id, metadata FROM documents"):
            self._doc_meta[doc_id] = json.loads(metadata)
            self._doc_chunks[doc_id] = []
        for chunk_id, doc_id in self._db.execute("SELECT chunk_id, doc_id FROM chunks ORDER BY chunk_id"):
            self._chunk_doc[chunk_id] = doc_id
            self._doc_chunks.setdefault(doc_id, []).append(chunk_id)

    def _vectors(self, chunk_ids: list[int]) -> np.ndarray:
        dims = self._params.index.dimensions
        out = np.zeros((len(chunk_ids), dims), np.float32)
        for start in range(0, len(chunk_ids), 500):
            part = chunk_ids[start:start + 500]
            rows = dict(self._db.execute(
                f"SELECT chunk_id, vector FROM chunks WHERE chunk_id IN ({','.join('?' * len(part))})", part))
            for i, chunk_id in enumerate(part):
                out[start + i] = np.frombuffer(rows[chunk_id], dtype=np.float32)
        return out

    def _load_index(self) -> VectorIndex:
        """Newest valid snapshot + journal replay; a full rebuild when there is none."""
        found = snapshots.read_newest(self.directory, self._params.index, self._quarantine)
        if found is not None:
            index, seq = found
            self._replay(index, seq)
            return index
        live = sorted(self._chunk_doc)
        return VectorIndex.build(self._params.index, np.asarray(live, dtype=np.int64), self._vectors(live))

    def _replay(self, index: VectorIndex, after_seq: int) -> None:
        added: list[int] = []
        for seq, add, remove in self._db.execute("SELECT seq, added, removed FROM ops WHERE seq > ? ORDER BY seq", (after_seq,)):
            index.remove(json.loads(remove))
            added.extend(json.loads(add))
            self._ops_since_snapshot += 1
        present = [c for c in added if c in self._chunk_doc]
        index.add(np.asarray(present, dtype=np.int64), self._vectors(present))

    # ---------------------------------------------------------------- writing
    def plan_chunks(self, text: str) -> list[tuple[int, int]]:
        return chunk_spans(text, size=self._params.chunk_chars, overlap=self._params.chunk_overlap)

    def _check_open(self) -> None:
        if self._closed:  # a caller holding it across a drop
            raise StoreError(f"collection {self.name!r} was dropped", status=404, code="collection_not_found", param="collection")

    def upsert(self, docs: list[dict[str, Any]], spans: list[list[tuple[int, int]]], vectors: list[np.ndarray]) -> None:
        """Store ``docs`` (replacing same ids) with their chunk spans and vectors, durably."""
        with self._lock:
            self._check_open()
            removed: list[int] = []
            added: list[int] = []
            now = time.time()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for doc, doc_spans, doc_vectors in zip(docs, spans, vectors):
                    removed += self._doc_chunks.get(doc["id"], [])
                    self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc["id"],))
                    self._db.execute(
                        "INSERT INTO documents VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                        "text = excluded.text, metadata = excluded.metadata, updated_at = excluded.updated_at",
                        (doc["id"], doc["text"], json.dumps(doc.get("metadata") or {}), now),
                    )
                    for position, ((start, end), vector) in enumerate(zip(doc_spans, doc_vectors)):
                        cursor = self._db.execute(
                            "INSERT INTO chunks (doc_id, position, start, end, vector) VALUES (?, ?, ?, ?, ?)",
                            (doc["id"], position, start, end, np.asarray(vector, dtype=np.float32).tobytes()),
                        )
                        added.append(int(cursor.lastrowid))
                self._db.execute("INSERT INTO ops (added, removed) VALUES (?, ?)", (json.dumps(added), json.dumps(removed)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            # Committed (and fsynced): now make it visible to searches.
            position = 0
            all_vectors = np.vstack([np.asarray(v, dtype=np.float32) for v in vectors]) if added else np.zeros((0, self._params.index.dimensions), np.float32)
            for doc, doc_spans in zip(docs, spans):
                for chunk_id in self._doc_chunks.pop(doc["id"], []):
                    self._chunk_doc.pop(chunk_id, None)
                ids = added[position:position + len(doc_spans)]
                position += len(doc_spans)
                self._doc_chunks[doc["id"]] = ids
                self._doc_meta[doc["id"]] = doc.get("metadata") or {}
                for chunk_id in ids:
                    self._chunk_doc[chunk_id] = doc["id"]
            self._index.remove(removed)
            self._index.add(np.asarray(added, dtype=np.int64), all_vectors)
            self._after_write()

    def delete(self, doc_id: str) -> bool:
        """Delete one document durably; False when it does not exist."""
        with self._lock:
            self._check_open()
            if doc_id not in self._doc_meta:
                return False
            removed = self._doc_chunks.get(doc_id, [])
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
                self._db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
                self._db.execute("INSERT INTO ops (added, removed) VALUES (?, ?)", ("[]", json.dumps(removed)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for chunk_id in self._doc_chunks.pop(doc_id, []):
                self._chunk_doc.pop(chunk_id, None)
            self._doc_meta.pop(doc_id, None)
            self._index.remove(removed)
            self._after_write()
            return True

    @property
    def pending_ops(self) -> int:
        """Writes not yet covered by a snapshot."""
        return self._ops_since_snapshot

    def _after_write(self) -> None:
        self._ops_since_snapshot += 1
        if self._ops_since_snapshot >= self._params.snapshot_every_ops:
            try:
                self.snapshot(blocking=False)
            except OSError as exc:  # the write itself is durable in the database and journal
                logger.error("snapshot of collection %s failed: %r", self.name, exc)

    def snapshot(self, *, blocking: bool = True) -> None:
        """Write the index atomically, then drop the journal entries it covers.

        A write that triggers a snapshot does not wait for one already running (it holds
        the collection lock that the running one needs); that one covers it.
        """
        if not self._snapshot_lock.acquire(blocking=blocking):
            return
        try:
            if not self._closed:  # a dropped collection's directory is not ours any more
                self._snapshot()
        finally:
            self._snapshot_lock.release()

    def _snapshot(self) -> None:
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM ops").fetchone()[0]
            if self._index.needs_rebuild(len(self._chunk_doc)):
                live = sorted(self._chunk_doc)
                self._index = VectorIndex.build(self._params.index, np.asarray(live, dtype=np.int64), self._vectors(live))
            data = self._index.to_bytes()
            kind, tombstones = self._index.kind, sorted(self._index.tombstones)
            self._ops_since_snapshot = 0
        snapshots.write(self.directory, seq, data, kind=kind, dimensions=self._params.index.dimensions, tombstones=tombstones)
        with self._lock:
            self._db.execute("DELETE FROM ops WHERE seq <= ?", (seq,))

    # ---------------------------------------------------------------- reading
    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        self._check_open()
        row = self._db.execute("SELECT id, text, metadata FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "text": row[1], "metadata": json.loads(row[2]), "chunks": len(self._doc_chunks.get(doc_id, []))}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.name, "documents": len(self._doc_meta), "chunks": len(self._chunk_doc),
                    "index": self._index.kind, "tombstones": len(self._index.tombstones)}

    def search(self, query: np.ndarray, k: int, predicate: Optional[Callable[[dict[str, Any]], bool]] = None) -> list[Hit]:
        """The ``k`` best documents (by their best chunk) for an embedded query."""
        with self._lock:
            self._check_open()
            allowed = None
            if predicate is not None:
                docs = [d for d, meta in self._doc_meta.items() if predicate(meta)]
                allowed = np.asarray([c for d in docs for c in self._doc_chunks.get(d, [])], dtype=np.int64)
                if len(allowed) == 0:
                    return []
            fetch = k * 4
            while True:
                scores, ids = self._index.search(query, fetch, allowed)
                best: dict[str, tuple[float, int]] = {}
                for score, chunk_id in zip(scores.tolist(), ids.tolist()):
                    doc_id = self._chunk_doc.get(chunk_id)
                    if doc_id is not None and doc_id not in best:
                        best[doc_id] = (score, chunk_id)
                exhausted = len(ids) < fetch or fetch >= self._index.ntotal
                if len(best) >= k or exhausted:
                    break
                fetch *= 4
            top = sorted(best.items(), key=lambda item: -item[1][0])[:k]
            rows = {}
            if top:
                chunk_ids = [chunk_id for _, (_, chunk_id) in top]
                rows = {r[0]: r[1:] for r in self._db.execute(
                    f"SELECT chunk_id, doc_id, position, start, end FROM chunks WHERE chunk_id IN ({','.join('?' * len(chunk_ids))})", chunk_ids)}
                texts = dict(self._db.execute(
                    f"SELECT id, text FROM documents WHERE id IN ({','.join('?' * len(top))})", [d for d, _ in top]))
            hits = []
            for doc_id, (score, chunk_id) in top:
                _, position, start, end = rows[chunk_id]
                hits.append(Hit(doc_id, float(score), texts[doc_id][start:end], self._doc_meta[doc_id],
                                {"position": position, "start": start, "end": end}))
            return hits

    def close(self) -> None:
        """Close for good. A snapshot in progress finishes first, and none starts after,
        so a drop never races a snapshot writing into the directory it moves away."""
        with self._snapshot_lock, self._lock:
            self._closed = True
            self._db.close()


def _own_directory(root: Path, timeout_s: float) -> Any:
    """Hold the data directory's lock for this process's lifetime (an OS lock, so a
    killed process releases it). A replacement replica waits up to ``timeout_s`` for the
    old one to let go; a second process sharing the directory is refused: two writers
    would each keep their own index and snapshot over the other's."""
    from filelock import FileLock, Timeout

    owner = FileLock(root / "store.lock")
    try:
        owner.acquire(timeout=timeout_s)
    except Timeout:
        raise StoreError(f"the collections directory {root} is in use by another process; "
                         "each data directory can be served by one embedder replica",
                         status=409, code="store_in_use") from None
    return owner


class CollectionStore:
    """Every collection under one data directory, opened lazily and kept open."""

    def __init__(self, root: Path, params: StoreParams, *, max_collections: int, lock_timeout_s: float = 60.0) -> None:
        self.root = root
        self._params = params
        self._max = max_collections
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self.quarantined: list[dict[str, Any]] = []
        (root / "collections").mkdir(parents=True, exist_ok=True)
        self._owner = _own_directory(root, lock_timeout_s)
        try:
            for directory in sorted((root / "collections").iterdir()):
                if directory.is_dir() and valid_collection_name(directory.name):
                    self._try_open(directory.name)
        except BaseException:
            self._owner.release()
            raise

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.root / "quarantine" / f"{int(time.time() * 1000)}-{path.parent.name}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        logger.error("quarantined %s: %s", path, reason)
        self.quarantined.append({"path": str(target), "reason": reason})

    def _try_open(self, name: str) -> Optional[Collection]:
        directory = self.root / "collections" / name
        try:
            collection = Collection(directory, self._params, quarantine=self._quarantine)
        except StoreError as exc:
            if exc.code == "corrupt":
                self._quarantine(directory, exc.message)
                return None
            raise
        self._open[name] = collection
        return collection

    @staticmethod
    def check_name(name: str) -> None:
        if not valid_collection_name(name):
            raise StoreError(COLLECTION_NAME_RULE, param="collection", code="invalid_collection_name")

    def get(self, name: str, *, create: bool = False) -> Collection:
        self.check_name(name)
        with self._lock:
            if name in self._open:
                return self._open[name]
            if not create:
                raise StoreError(f"collection {name!r} does not exist", status=404, code="collection_not_found", param="collection")
            if len(self._open) >= self._max:
                raise StoreError(f"at most {self._max} collections", status=409, code="too_many_collections", param="collection")
            return self._try_open(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._open)

    def drop(self, name: str) -> bool:
        import shutil

        self.check_name(name)
        with self._lock:
            collection = self._open.pop(name, None)
            if collection is None:
                return False
            collection.close()
            trash = self.root / "trash" / f"{name}-{int(time.time() * 1000)}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(collection.directory, trash)  # one atomic step; the delete can fail harmlessly
            shutil.rmtree(trash, ignore_errors=True)
            return True

    def ping(self) -> None:
        """Nothing to ask: the files are this replica's own (readiness)."""

    def snapshot_pending(self) -> None:
        """Snapshot every collection with writes since its last snapshot."""
        with self._lock:
            collections = list(self._open.values())
        for collection in collections:
            if collection.pending_ops:
                collection.snapshot()

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()
            self._owner.release()
