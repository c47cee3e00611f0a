"""Collections in PostgreSQL with pgvector: the store a cluster shares.

The embedded store (``collection.py``) keeps each collection's files on one replica's
disk; this one keeps every collection in three tables of one database, so the
Collections deployment holds no state and any number of replicas on any node serve the
same collections. Same interface, same answers: documents and their metadata (JSONB),
passages with their vectors in a ``vector`` column under an HNSW index (cosine), the
search filters as SQL (``sql_filters.py``, every name and value a parameter). Each write
is one transaction, acknowledged after its commit, as in the embedded store.

A collection's model and dimensions are recorded when it is created; a graph that
embeds with another model is refused (409 ``embedder_mismatch``), as on disk.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import numpy as np

from deployments.collections.chunking import chunk_spans
from deployments.collections.collection import CollectionStore, Hit, StoreError, StoreParams
from deployments.collections.sql_filters import ISO_TIME_FUNCTION, sql_filter
from serve.kernel.errors import error_reason

#: Schema of the shared tables; ``{dimensions}`` is the embedder's (fixed per database).
logger = logging.getLogger("ray.serve")

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS llmgraph_collections (
    name TEXT PRIMARY KEY, model_id TEXT NOT NULL, dimensions INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS llmgraph_documents (
    collection TEXT NOT NULL REFERENCES llmgraph_collections(name) ON DELETE CASCADE, id TEXT NOT NULL,
    text TEXT NOT NULL, metadata JSONB NOT NULL, updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (collection, id));
CREATE TABLE IF NOT EXISTS llmgraph_chunks (
    chunk_id BIGSERIAL PRIMARY KEY, collection TEXT NOT NULL, doc_id TEXT NOT NULL, position INTEGER NOT NULL,
    start_at INTEGER NOT NULL, end_at INTEGER NOT NULL, embedding vector({dimensions}) NOT NULL, metadata JSONB NOT NULL,
    FOREIGN KEY (collection, doc_id) REFERENCES llmgraph_documents(collection, id) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS llmgraph_chunks_by_doc ON llmgraph_chunks (collection, doc_id);
CREATE INDEX IF NOT EXISTS llmgraph_chunks_hnsw ON llmgraph_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction});
"""


def _unavailable(message: str) -> StoreError:
    return StoreError(message, status=503, code="store_unavailable")


class PostgresCollection:
    """One collection's rows in the shared tables (a light handle: no state of its own)."""

    def __init__(self, store: "PostgresCollectionStore", name: str) -> None:
        self._store = store
        self.name = name

    def plan_chunks(self, text: str) -> list[tuple[int, int]]:
        params = self._store.params
        return chunk_spans(text, size=params.chunk_chars, overlap=params.chunk_overlap)

    def upsert(self, docs: list[dict[str, Any]], spans: list[list[tuple[int, int]]], vectors: list[np.ndarray]) -> None:
        """Store ``docs`` (replacing same ids) with their passages and vectors; committed on return.

        Three statements for the whole request (psycopg pipelines the batched ones), not
        three per document: the old passages go, the documents are upserted, the new
        passages are written.
        """
        now = time.time()
        documents = [(self.name, doc["id"], doc["text"], json.dumps(doc.get("metadata") or {}), now) for doc in docs]
        chunks = [(self.name, doc["id"], position, start, end, np.asarray(vector, dtype=np.float32),
                   json.dumps(doc.get("metadata") or {}))
                  for doc, doc_spans, doc_vectors in zip(docs, spans, vectors)
                  for position, ((start, end), vector) in enumerate(zip(doc_spans, doc_vectors))]
        with self._store.transaction() as db:
            self._store.require(db, self.name)
            db.execute("DELETE FROM llmgraph_chunks WHERE collection = %s AND doc_id = ANY(%s)",
                       (self.name, [doc["id"] for doc in docs]))
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO llmgraph_documents VALUES (%s, %s, %s, %s::jsonb, %s) ON CONFLICT "
                                   "(collection, id) DO UPDATE SET text = excluded.text, metadata = excluded.metadata, "
                                   "updated_at = excluded.updated_at", documents)
                cursor.executemany("INSERT INTO llmgraph_chunks (collection, doc_id, position, start_at, end_at, embedding, "
                                   "metadata) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)", chunks)

    def delete(self, doc_id: str) -> bool:
        with self._store.transaction() as db:
            self._store.require(db, self.name)
            return db.execute("DELETE FROM llmgraph_documents WHERE collection = %s AND id = %s",
                              (self.name, doc_id)).rowcount > 0

    def get(self, doc_id: str) -> Optional[dict[str, Any]]:
        with self._store.transaction() as db:
            self._store.require(db, self.name)
            row = db.execute("SELECT d.id, d.text, d.metadata, (SELECT count(*) FROM llmgraph_chunks c WHERE "
                             "c.collection = d.collection AND c.doc_id = d.id) FROM llmgraph_documents d "
                             "WHERE d.collection = %s AND d.id = %s", (self.name, doc_id)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "text": row[1], "metadata": row[2], "chunks": int(row[3])}

    def stats(self) -> dict[str, Any]:
        with self._store.transaction() as db:
            self._store.require(db, self.name)
            documents = db.execute("SELECT count(*) FROM llmgraph_documents WHERE collection = %s", (self.name,)).fetchone()[0]
            chunks = db.execute("SELECT count(*) FROM llmgraph_chunks WHERE collection = %s", (self.name,)).fetchone()[0]
        return {"name": self.name, "documents": int(documents), "chunks": int(chunks), "index": "pgvector-hnsw",
                "tombstones": 0}

    def search(self, query: np.ndarray, k: int, filter: Optional[dict[str, Any]] = None) -> list[Hit]:
        """The ``k`` best documents (by their best passage) for an embedded query.

        Each passage carries its document's metadata, so the filter applies to the rows
        the HNSW index yields and pgvector's iterative index scan keeps reading the
        graph until enough pass it (a filter on a joined table would make the planner
        give up the index for an exact scan); passages are gathered ``4k`` at a time
        until ``k`` documents have one (or the collection has no more).
        """
        clause, params = sql_filter(filter, "c.metadata")
        vector = np.asarray(query, dtype=np.float32)
        fetch = k * 4
        with self._store.transaction() as db:
            self._store.require(db, self.name)
            db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            db.execute(f"SET LOCAL hnsw.ef_search = {int(self._store.params.index.hnsw_ef_search)}")
            while True:
                rows = db.execute(
                    "SELECT top.doc_id, 1 - top.distance, top.position, top.start_at, top.end_at, d.text, d.metadata FROM "
                    "(SELECT c.collection, c.doc_id, c.embedding <=> %s AS distance, c.position, c.start_at, c.end_at "
                    f"FROM llmgraph_chunks c WHERE c.collection = %s AND {clause} ORDER BY c.embedding <=> %s LIMIT %s) top "
                    "JOIN llmgraph_documents d ON d.collection = top.collection AND d.id = top.doc_id ORDER BY top.distance",
                    (vector, self.name, *params, vector, fetch)).fetchall()
                best: dict[str, Hit] = {}
                for doc_id, score, position, start, end, text, metadata in rows:
                    if doc_id not in best:
                        best[doc_id] = Hit(doc_id, float(score), text[start:end], metadata,
                                           {"position": position, "start": start, "end": end})
                if len(best) >= k or len(rows) < fetch:
                    break
                fetch *= 4
        return sorted(best.values(), key=lambda hit: -hit.score)[:k]


class PostgresCollectionStore:
    """Every collection in one PostgreSQL database (with the pgvector extension).

    Args:
        url: The database's URL (read from a secret by the caller; never logged).
        params: The profile's collection settings.
        max_collections: How many collections may exist.
    """

    def __init__(self, url: str, params: StoreParams, *, max_collections: int) -> None:
        self.params = params
        self._url = url
        self._max = max_collections
        self._lock = threading.Lock()
        self._db: Any = None
        self.quarantined: list[dict[str, Any]] = []
        try:
            with self._lock:
                self._connection()
        except StoreError as exc:  # the graph starts; requests get 503 until the database answers
            logger.error("collections store: %s", exc.message)

    def _connection(self) -> Any:
        """The open connection, made (and the schema applied) when there is none.

        Raises:
            StoreError: 503 ``store_unavailable`` when the database cannot be reached or
                used; the message names what is wrong (never the URL: it holds a password).
        """
        if self._db is not None and not self._db.closed:
            return self._db
        import psycopg
        from pgvector.psycopg import register_vector

        try:
            db = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise _unavailable(f"PostgreSQL refused the connection: {error_reason(exc)}") from None
        try:
            db.execute("SET TIME ZONE 'UTC'")
            db.execute(SCHEMA.split(";")[0])  # the extension first: the vector type is registered from it
            register_vector(db)
            index = self.params.index
            db.execute(SCHEMA.format(dimensions=int(index.dimensions), m=int(index.hnsw_m),
                                     ef_construction=int(index.hnsw_ef_construction)))
            db.execute(ISO_TIME_FUNCTION)
        except psycopg.Error as exc:
            db.close()
            raise _unavailable(f"PostgreSQL schema setup failed (is the pgvector extension installed?): "
                               f"{error_reason(exc)}") from None
        self._db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction on the store's connection (serialized: a connection runs one at
        a time); a lost connection is a 503 and is made again on the next call."""
        import psycopg

        with self._lock:
            db = self._connection()
            try:
                with db.transaction():
                    yield db
            except psycopg.OperationalError as exc:
                db.close()
                self._db = None
                raise _unavailable(f"PostgreSQL connection lost: {error_reason(exc)}") from None

    def require(self, db: Any, name: str) -> None:
        """Raise the 404 (or the embedder mismatch) a missing or foreign collection gets."""
        row = db.execute("SELECT model_id, dimensions FROM llmgraph_collections WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise StoreError(f"collection {name!r} does not exist", status=404, code="collection_not_found", param="collection")
        if (row[0], row[1]) != (self.params.model_id, self.params.index.dimensions):
            raise StoreError(f"collection {name!r} was built with {row[0]} ({row[1]}-d); this graph embeds with "
                             f"{self.params.model_id}", status=409, code="embedder_mismatch")

    check_name = staticmethod(CollectionStore.check_name)

    def get(self, name: str, *, create: bool = False) -> PostgresCollection:
        self.check_name(name)
        with self.transaction() as db:
            exists = db.execute("SELECT 1 FROM llmgraph_collections WHERE name = %s", (name,)).fetchone()
            if exists is None:
                if not create:
                    raise StoreError(f"collection {name!r} does not exist", status=404, code="collection_not_found",
                                     param="collection")
                if db.execute("SELECT count(*) FROM llmgraph_collections").fetchone()[0] >= self._max:
                    raise StoreError(f"at most {self._max} collections", status=409, code="too_many_collections",
                                     param="collection")
                db.execute("INSERT INTO llmgraph_collections VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                           (name, self.params.model_id, self.params.index.dimensions, time.time()))
            else:
                self.require(db, name)
        return PostgresCollection(self, name)

    def names(self) -> list[str]:
        with self.transaction() as db:
            return [row[0] for row in db.execute("SELECT name FROM llmgraph_collections ORDER BY name")]

    def drop(self, name: str) -> bool:
        self.check_name(name)
        with self.transaction() as db:
            return db.execute("DELETE FROM llmgraph_collections WHERE name = %s", (name,)).rowcount > 0

    def ping(self) -> None:
        """Raises the 503 when the database does not answer (readiness)."""
        with self.transaction() as db:
            db.execute("SELECT 1").fetchone()

    def snapshot_pending(self) -> None:
        """Nothing to snapshot: the database holds the index."""

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
