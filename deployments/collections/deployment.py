"""The Collections deployment: durable document collections.

Embedded (the default), the store (SQLite + FAISS, ``deployments/collections/collection.py``)
lives on one disk and takes an OS lock on its directory, so this deployment runs exactly
one replica. On ``backend: postgres`` (``pg_store.py``) the collections live in
PostgreSQL with pgvector and the replicas hold no state: the profile may run several. It asks
the Embedder deployment for vectors, so the Embedder stays stateless and can scale out,
and bulk ingestion here never holds a lock the routing path needs. The store's work
(SQLite, FAISS) runs in worker threads so reads keep flowing while a large upsert is
written.

Errors cross the handle as the application's typed errors (``serve/kernel/errors.py``), which
the ingress maps to the OpenAI envelope like any other.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from ray.serve.handle import DeploymentHandle

from deployments.collections.collection import CollectionStore, StoreError, StoreParams
from deployments.collections.filters import FilterError, compile_filter
from serve.kernel.config import CollectionsSpec, EmbedderSpec
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.errors import BadRequest, Conflict, GraphError, NotFound, PayloadTooLarge, Unavailable, within
from serve.kernel.log_filters import quiet_probes
from serve.kernel.observability import replica_metric
from serve.kernel.settings import configured_postgres_url, load_settings

logger = logging.getLogger("ray.serve")

_BY_STATUS: dict[int, type[GraphError]] = {400: BadRequest, 404: NotFound, 409: Conflict, 413: PayloadTooLarge}


def _as_graph_error(exc: StoreError) -> GraphError:
    """A store error as the typed error the ingress maps (a failed integrity check, or a
    database that does not answer, is a 503 to retry)."""
    kind = _BY_STATUS.get(exc.status, Unavailable)
    headers = {"Retry-After": "5"} if kind is Unavailable else None
    return kind(exc.message, param=exc.param, code=exc.code, headers=headers)


class Collections:
    """Named collections under one data directory.

    Args:
        spec: The profile's collections block.
        embedder_spec: The profile's embedder block (the vectors' model and size).
        data_dir: Where the collections live.
        embedder: Handle to the Embedder deployment.
    """

    def __init__(self, spec: CollectionsSpec, embedder_spec: EmbedderSpec, data_dir: str, embedder: DeploymentHandle) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        self._spec = spec
        self._embedder = embedder
        self._embed_timeout_s = load_settings().embedder_timeout_s
        params = StoreParams.from_spec(spec, embedder_spec)
        if spec.backend == "postgres":
            from deployments.collections.pg_store import PostgresCollectionStore

            self._store = PostgresCollectionStore(configured_postgres_url(), params, max_collections=spec.max_collections)
            self._filter = _checked_spec
        else:
            self._store = CollectionStore(Path(data_dir), params, max_collections=spec.max_collections)
            self._filter = compile_filter
        for item in self._store.quarantined:
            logger.error("collection data quarantined at start: %s (%s)", item["path"], item["reason"])
        logger.info("collections loaded from %s: %s", data_dir, self._store.names())
        for name in self._store.names():
            _record_size(self._store.get(name).stats())
        self._snapshot_task: Optional[asyncio.Task] = None

    async def check_health(self) -> None:
        return None

    async def readiness(self) -> None:
        """Ready while the store answers (the PostgreSQL server, on that backend)."""
        await self._run(self._store.ping)

    # -------------------------------------------------------------- plumbing
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn`` in a worker thread; store and filter errors become typed errors."""
        self._watch_snapshots()
        try:
            return await asyncio.to_thread(fn, *args)
        except StoreError as exc:
            raise _as_graph_error(exc) from None
        except FilterError as exc:
            raise BadRequest(str(exc), param=f"filter.{exc.field}", code="invalid_filter") from None

    async def _embed(self, texts: list[str]) -> tuple[Any, int]:
        result = await within(self._embedder.embed.remote(texts), self._embed_timeout_s, "the embedder")
        return result["vectors"], int(result["tokens"])

    def _watch_snapshots(self) -> None:
        if self._snapshot_task is None:
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_loop(), context=contextvars.Context())

    async def _snapshot_loop(self) -> None:
        """Pending writes reach a snapshot within ``snapshot_interval_s`` even when quiet."""
        while True:
            await asyncio.sleep(self._spec.snapshot_interval_s)
            try:
                await asyncio.to_thread(self._store.snapshot_pending)
            except Exception as exc:  # noqa: BLE001 - the journal still holds every write
                logger.error("snapshot failed: %r", exc)

    # ------------------------------------------------------------------ API
    async def upsert(self, collection: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
        """Embed every passage of ``documents`` and store them durably (replacing same ids)."""
        target = await self._run(lambda: self._store.get(collection, create=True))
        spans = [target.plan_chunks(doc["text"]) for doc in documents]
        passages = [doc["text"][start:end] for doc, doc_spans in zip(documents, spans) for start, end in doc_spans]
        vectors, tokens = await self._embed(passages)
        per_doc, start = [], 0
        for doc_spans in spans:
            per_doc.append(vectors[start:start + len(doc_spans)])
            start += len(doc_spans)
        await self._run(target.upsert, documents, spans, per_doc)
        _record_size(target.stats())
        return {"collection": collection, "upserted": len(documents), "passages": len(passages), "tokens": tokens}

    async def search(self, collection: str, query: str, k: int, filter: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        """The ``k`` best documents for ``query``, filtered by metadata."""
        predicate = await self._run(self._filter, filter) if filter else None
        target = await self._run(self._store.get, collection)
        vectors, _ = await self._embed([query])
        hits = await self._run(target.search, vectors[0], k, predicate)
        return [{"id": h.doc_id, "score": round(h.score, 6), "text": h.text, "metadata": h.metadata, "chunk": h.chunk} for h in hits]

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        target = await self._run(self._store.get, collection)
        doc = await self._run(target.get, doc_id)
        if doc is None:
            raise NotFound(f"document {doc_id!r} is not in collection {collection!r}", param="id", code="document_not_found")
        return doc

    async def delete_document(self, collection: str, doc_id: str) -> None:
        target = await self._run(self._store.get, collection)
        if not await self._run(target.delete, doc_id):
            raise NotFound(f"document {doc_id!r} is not in collection {collection!r}", param="id", code="document_not_found")
        _record_size(target.stats())

    async def stats(self, collection: Optional[str] = None) -> Any:
        """One collection's stats, or every collection's (``collection=None``)."""
        if collection is None:
            return await self._run(lambda: [self._store.get(n).stats() for n in self._store.names()])
        target = await self._run(self._store.get, collection)
        return await self._run(target.stats)

    async def drop(self, collection: str) -> None:
        if not await self._run(self._store.drop, collection):
            raise NotFound(f"collection {collection!r} does not exist", param="collection", code="collection_not_found")
        _record_size({"name": collection, "documents": 0, "chunks": 0})

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()


def _checked_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A filter for the PostgreSQL store, which takes the filter itself (as SQL), checked
    here as the embedded store's is compiled, so a bad one is the same 400."""
    compile_filter(spec)
    return spec


def _record_size(stats: dict[str, Any]) -> None:
    """Collection sizes as gauges (the label is bounded by collections.max_collections)."""
    tags = {"collection": stats["name"]}
    replica_metric("Gauge", "llmgraph_collection_documents", "Documents in a collection.", ("collection",)).set(stats["documents"], tags=tags)
    replica_metric("Gauge", "llmgraph_collection_passages", "Indexed passages in a collection.", ("collection",)).set(stats["chunks"], tags=tags)
