"""A process that writes to a collection store until it is killed (crash test helper).

Each document's vector is derived from its id (no model needed), so the test can
search for it afterwards. Before each write, ``? + <ids>`` or ``? - <id>`` announces it;
after the write returns, ``+ <id>`` (upsert) or ``- <id>`` (delete) lines acknowledge it.
The test kills this process with SIGKILL at random moments: an announced write without
its acknowledgement was in flight, and may or may not have landed.

Usage: python -m tests.support.store_worker DATA_DIR|POSTGRES_URL FIRST_ID
(a ``postgresql://`` URL writes to PostgreSQL with pgvector, anything else is the
directory of an embedded store)
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import numpy as np

from deployments.collections.collection import CollectionStore, StoreParams
from deployments.collections.index import IndexParams
from serve.kernel.config import CollectionsSpec

DIMENSIONS = 32
COLLECTION = "crash"


def params() -> StoreParams:
    # Small thresholds so kills land in snapshots, HNSW rebuilds and journal replays.
    return StoreParams(index=IndexParams.from_spec(CollectionsSpec(hnsw_threshold=150), DIMENSIONS), model_id="hash-32",
                       chunk_chars=200, chunk_overlap=20, snapshot_every_ops=9)


def vector_for(doc_id: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


def open_store(where: str):
    """The embedded store in directory ``where``, or the PostgreSQL store at URL ``where``."""
    if where.startswith(("postgresql://", "postgres://")):
        from deployments.collections.pg_store import PostgresCollectionStore

        return PostgresCollectionStore(where, params(), max_collections=4)
    return CollectionStore(Path(where), params(), max_collections=4)


def main() -> None:
    first = int(sys.argv[2])
    store = open_store(sys.argv[1])
    collection = store.get(COLLECTION, create=True)
    rng = random.Random(first)
    written: list[str] = []
    n = first
    while True:
        if written and rng.random() < 0.1:
            doc_id = written.pop(rng.randrange(len(written)))
            print(f"? - {doc_id}", flush=True)
            collection.delete(doc_id)
            print(f"- {doc_id}", flush=True)
            continue
        batch = [f"doc-{n + i}" for i in range(rng.randint(1, 4))]
        n += len(batch)
        docs = [{"id": d, "text": f"text of {d}", "metadata": {"n": int(d.split('-')[1])}} for d in batch]
        print(f"? + {' '.join(batch)}", flush=True)
        spans = [collection.plan_chunks(doc["text"]) for doc in docs]
        vectors = [np.vstack([vector_for(doc["id"])] * len(s)) for doc, s in zip(docs, spans)]
        collection.upsert(docs, spans, vectors)
        written += batch
        for doc_id in batch:
            print(f"+ {doc_id}", flush=True)


if __name__ == "__main__":
    main()
