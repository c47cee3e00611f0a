"""The Embedder deployment: batched embeddings, and the document collections.

Concurrent embedding requests share one forward pass (``@serve.batch``). The same
replica owns the collections, so a document is embedded and stored without leaving the
process; the store's work (SQLite, FAISS) runs in worker threads so searches and
embeddings keep flowing while a large upsert is written.

Collection methods return ``{"ok": ...}`` or ``{"error": {...}}`` rather than raise:
the ingress turns the error into the HTTP envelope without depending on how Ray wraps
exceptions that cross a handle.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from ray import serve

from deployments.embedder.encoder import Encoder, encode_requests
from serve.config import CollectionsSpec, EmbedderSpec
from serve.observability import replica_metric

logger = logging.getLogger("ray.serve")


def _error(status: int, message: str, code: str, param: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"status": status, "message": message, "code": code, "param": param}}


def _texts_in(requests: list[list[str]]) -> int:
    """A batch's size for ``@serve.batch``: its texts (an empty request counts one)."""
    return sum(max(len(texts), 1) for texts in requests)


class Embedder:
    """Serves embeddings for the ingress and the router, and the collections.

    Args:
        spec: The profile's embedder block.
        model_path: Resolved model location.
        collections: The profile's collections block (None: no collections).
        data_dir: Where collections live on disk.
        cache_dir: Where derived model files (the ONNX export) are cached.
        encoder: Injectable encoder (tests); by default the profile's backend.
    """

    def __init__(
        self, spec: EmbedderSpec, model_path: str, collections: Optional[CollectionsSpec] = None,
        data_dir: Optional[str] = None, *, cache_dir: Optional[str] = None, encoder: Optional[Encoder] = None,
    ) -> None:
        if encoder is None:
            from deployments.embedder.encoder import make_encoder
            from serve.settings import load_settings

            encoder = make_encoder(spec, model_path, cache_dir=Path(cache_dir) if cache_dir else load_settings().cache_dir)
        if encoder.dimensions != spec.dimensions:
            raise ValueError(
                f"embedder {spec.model_id}: model produces {encoder.dimensions}-d "
                f"vectors but the profile says dimensions={spec.dimensions}"
            )
        self._spec = spec
        self._encoder = encoder
        # The batch size and wait come from the profile, not from a decorator.
        self._encode_batched.set_max_batch_size(spec.max_batch_size)
        self._encode_batched.set_batch_wait_timeout_s(spec.batch_wait_timeout_s)
        self._collections_spec = collections
        self._store = None
        self._snapshot_task: Optional[asyncio.Task] = None
        if collections is not None and collections.enabled and data_dir:
            self._store = self._open_store(collections, Path(data_dir))
            for name in self._store.names():
                self._record_size(self._store.get(name).stats())

    def _open_store(self, spec: CollectionsSpec, data_dir: Path):
        from deployments.embedder.collection import CollectionStore, StoreParams
        from deployments.embedder.index import IndexParams

        params = StoreParams(
            index=IndexParams(
                dimensions=self._spec.dimensions, hnsw_threshold=spec.hnsw_threshold, hnsw_m=spec.hnsw_m,
                hnsw_ef_construction=spec.hnsw_ef_construction, hnsw_ef_search=spec.hnsw_ef_search,
            ),
            model_id=self._spec.model_id, chunk_chars=spec.chunk_chars, chunk_overlap=spec.chunk_overlap,
            snapshot_every_ops=spec.snapshot_every_ops,
        )
        store = CollectionStore(data_dir, params, max_collections=spec.max_collections)
        for item in store.quarantined:
            logger.error("collection data quarantined at start: %s (%s)", item["path"], item["reason"])
        logger.info("collections loaded from %s: %s", data_dir, store.names())
        return store

    # ------------------------------------------------------------ embeddings
    # A batch is measured in texts, not calls: one call of 2,000 passages would otherwise
    # be one forward pass that every other caller waits behind.
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01, batch_size_fn=_texts_in)
    async def _encode_batched(self, requests: list[list[str]]) -> list[tuple[np.ndarray, int]]:
        # In a thread: torch releases the GIL, so the replica keeps answering meanwhile.
        return await asyncio.to_thread(encode_requests, self._encoder, requests)

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed ``texts``; returns ``{"vectors": float32 array, "tokens": int}``.

        Long lists go through in slices of at most ``max_batch_size`` texts, each its own
        batched call, so other callers' texts join the passes in between.
        """
        size = self._spec.max_batch_size
        texts = list(texts)
        parts = [await self._encode_batched(texts[i:i + size]) for i in range(0, len(texts), size)]
        if not parts:
            parts = [await self._encode_batched([])]
        return {"vectors": np.concatenate([vectors for vectors, _ in parts]), "tokens": sum(t for _, t in parts)}

    async def check_health(self) -> None:
        """Serve health check: the encoder is in memory once constructed."""
        return None

    # ----------------------------------------------------------- collections
    def _watch_snapshots(self) -> None:
        if self._snapshot_task is None and self._store is not None:
            self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_loop(), context=contextvars.Context())

    async def _snapshot_loop(self) -> None:
        """Pending writes reach a snapshot within ``snapshot_interval_s`` even when quiet."""
        while True:
            await asyncio.sleep(self._collections_spec.snapshot_interval_s)
            try:
                await asyncio.to_thread(self._store.snapshot_pending)
            except Exception as exc:  # noqa: BLE001 - the journal still holds every write
                logger.error("snapshot failed: %r", exc)

    async def _call(self, fn, *args) -> dict[str, Any]:
        from deployments.embedder.collection import StoreError
        from deployments.embedder.filters import FilterError

        if self._store is None:
            return _error(404, "collections are disabled in this profile", "collections_disabled")
        self._watch_snapshots()
        try:
            return {"ok": await asyncio.to_thread(fn, *args)}
        except StoreError as exc:
            return _error(exc.status, exc.message, exc.code, exc.param)
        except FilterError as exc:
            return _error(400, str(exc), "invalid_filter", f"filter.{exc.field}")

    async def _collection(self, name: str, *, create: bool = False) -> dict[str, Any]:
        """``{"ok": Collection}`` or the error envelope (unknown, bad name, disabled)."""
        if self._store is None:
            return await self._call(lambda: None)
        return await self._call(functools.partial(self._store.get, name, create=create))

    async def upsert(self, collection: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
        """Embed every passage of ``documents`` and store them durably (replacing same ids)."""
        found = await self._collection(collection, create=True)
        if "error" in found:
            return found
        target = found["ok"]
        spans = [target.plan_chunks(doc["text"]) for doc in documents]
        passages = [doc["text"][start:end] for doc, doc_spans in zip(documents, spans) for start, end in doc_spans]
        vectors, tokens = await self._encode_batched(passages)
        per_doc, start = [], 0
        for doc_spans in spans:
            per_doc.append(vectors[start:start + len(doc_spans)])
            start += len(doc_spans)
        result = await self._call(target.upsert, documents, spans, per_doc)
        if "error" in result:
            return result
        self._record_size(target.stats())
        return {"ok": {"collection": collection, "upserted": len(documents), "passages": len(passages), "tokens": tokens}}

    async def search(self, collection: str, query: str, k: int, filter: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        """The ``k`` best documents for ``query``, filtered by metadata."""
        from deployments.embedder.filters import FilterError, compile_filter

        try:
            predicate = compile_filter(filter) if filter else None
        except FilterError as exc:
            return _error(400, str(exc), "invalid_filter", f"filter.{exc.field}")
        found = await self._collection(collection)
        if "error" in found:
            return found
        vector = (await self._encode_batched([query]))[0][0]
        hits = await self._call(found["ok"].search, vector, k, predicate)
        if "error" in hits:
            return hits
        return {"ok": [
            {"id": h.doc_id, "score": round(h.score, 6), "text": h.text, "metadata": h.metadata, "chunk": h.chunk}
            for h in hits["ok"]
        ]}

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        found = await self._collection(collection)
        if "error" in found:
            return found
        doc = await self._call(found["ok"].get, doc_id)
        if doc.get("ok") is None and "error" not in doc:
            return _error(404, f"document {doc_id!r} is not in collection {collection!r}", "document_not_found", "id")
        return doc

    async def delete_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        found = await self._collection(collection)
        if "error" in found:
            return found
        deleted = await self._call(found["ok"].delete, doc_id)
        if deleted.get("ok") is False:
            return _error(404, f"document {doc_id!r} is not in collection {collection!r}", "document_not_found", "id")
        self._record_size(found["ok"].stats())
        return deleted

    async def collection_stats(self, collection: Optional[str] = None) -> dict[str, Any]:
        """One collection's stats, or every collection's (``collection=None``)."""
        if self._store is None:
            return await self._call(lambda: None)
        if collection is None:
            store = self._store
            return await self._call(lambda: [store.get(n).stats() for n in store.names()])
        found = await self._collection(collection)
        if "error" in found:
            return found
        return await self._call(found["ok"].stats)

    async def drop_collection(self, collection: str) -> dict[str, Any]:
        if self._store is None:
            return await self._call(lambda: None)
        dropped = await self._call(self._store.drop, collection)
        if dropped.get("ok") is False:
            return _error(404, f"collection {collection!r} does not exist", "collection_not_found", "collection")
        self._record_size({"name": collection, "documents": 0, "chunks": 0})
        return dropped

    @staticmethod
    def _record_size(stats: dict[str, Any]) -> None:
        """Collection sizes as gauges (the label is bounded by collections.max_collections)."""
        tags = {"collection": stats["name"]}
        replica_metric("Gauge", "llmgraph_collection_documents", "Documents in a collection.", ("collection",)).set(stats["documents"], tags=tags)
        replica_metric("Gauge", "llmgraph_collection_passages", "Indexed passages in a collection.", ("collection",)).set(stats["chunks"], tags=tags)

    def __del__(self) -> None:
        store = getattr(self, "_store", None)
        if store is not None:
            store.close()
