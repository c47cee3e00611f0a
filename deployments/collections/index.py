"""The FAISS index of one collection: exact below a size, HNSW above it.

Vectors are L2-normalised, so inner product is cosine similarity. Ids are ours (the
store's chunk ids) through ``IndexIDMap2``. HNSW graphs cannot drop vectors, so a
deleted chunk becomes a tombstone that searches skip (an ``IDSelector``), and the index
is rebuilt without them when they pile up. Serialization is FAISS's own binary format
(never pickle).

Search stays on the CPU on every profile: HNSW answers in well under a millisecond at
the sizes one box holds (see ``bench index``), and on a shared 16 GB card every GiB is
worth more as KV cache than as a GPU index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

if TYPE_CHECKING:
    from serve.kernel.config import CollectionsSpec

#: Largest filtered candidate set scored exactly instead of through the HNSW graph.
EXACT_FILTERED_MAX = 20_000

@dataclass(frozen=True)
class IndexParams:
    """How a collection's index is built. The defaults live in the profile's
    ``collections`` block alone: build these with :meth:`from_spec`."""

    dimensions: int
    hnsw_threshold: int
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int

    @classmethod
    def from_spec(cls, collections: "CollectionsSpec", dimensions: int) -> "IndexParams":
        return cls(dimensions=dimensions, hnsw_threshold=collections.hnsw_threshold, hnsw_m=collections.hnsw_m,
                   hnsw_ef_construction=collections.hnsw_ef_construction, hnsw_ef_search=collections.hnsw_ef_search)


class VectorIndex:
    """A FAISS index with our ids, tombstones, and exact/HNSW selection."""

    def __init__(self, params: IndexParams, *, kind: str = "flat", faiss_index=None, tombstones: Iterable[int] = ()) -> None:
        import faiss

        self.params = params
        self.kind = kind
        self._index = faiss_index if faiss_index is not None else self._empty(kind)
        self.tombstones: set[int] = set(int(t) for t in tombstones)
        self._faiss = faiss

    def _empty(self, kind: str):
        import faiss

        if kind == "hnsw":
            base = faiss.IndexHNSWFlat(self.params.dimensions, self.params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = self.params.hnsw_ef_construction
            base.hnsw.efSearch = self.params.hnsw_ef_search
        else:
            base = faiss.IndexFlatIP(self.params.dimensions)
        return faiss.IndexIDMap2(base)

    # ------------------------------------------------------------- writing
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        self.tombstones.update(int(i) for i in ids)

    def needs_rebuild(self, live_count: int) -> bool:
        """Too many tombstones, or the collection crossed the exact/HNSW threshold."""
        wanted = "hnsw" if live_count >= self.params.hnsw_threshold else "flat"
        return wanted != self.kind or len(self.tombstones) > max(1000, self.ntotal // 5)

    @classmethod
    def build(cls, params: IndexParams, ids: np.ndarray, vectors: np.ndarray) -> "VectorIndex":
        """A fresh index over exactly these vectors (the kind chosen by their count)."""
        index = cls(params, kind="hnsw" if len(ids) >= params.hnsw_threshold else "flat")
        index.add(ids, vectors)
        return index

    # ------------------------------------------------------------- reading
    def search(self, query: np.ndarray, k: int, allowed: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, ids) for one query; ``allowed`` restricts the ids searched.

        Tombstoned ids never come back. Missing results are dropped (fewer than ``k``
        when fewer vectors qualify).
        """
        faiss = self._faiss
        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        selector = None
        if allowed is not None:
            keep = np.asarray([i for i in allowed if int(i) not in self.tombstones] if self.tombstones else allowed, dtype=np.int64)
            if len(keep) == 0:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            if self.kind == "hnsw" and len(keep) <= EXACT_FILTERED_MAX:
                # A selective filter starves HNSW's graph walk; score the few exactly.
                return self._exact(query, k, keep)
            selector = faiss.IDSelectorBatch(keep)
        elif self.tombstones:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64)))
        k = min(k, max(self.ntotal, 1))
        if selector is None:
            scores, ids = self._index.search(query, k)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.params.hnsw_ef_search, k))
            scores, ids = self._index.search(query, k, params=params)
        else:
            scores, ids = self._index.search(query, k, params=faiss.SearchParameters(sel=selector))
        found = ids[0] >= 0
        return scores[0][found], ids[0][found]

    def _exact(self, query: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = np.vstack([self._index.reconstruct(int(i)) for i in ids])
        scores = vectors @ query[0]
        top = np.argsort(-scores)[:k]
        return scores[top].astype(np.float32), ids[top]

    # ------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        return self._faiss.serialize_index(self._index).tobytes()

    @classmethod
    def from_bytes(cls, params: IndexParams, kind: str, data: bytes, tombstones: Iterable[int]) -> "VectorIndex":
        import faiss

        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = params.hnsw_ef_search
        return cls(params, kind=kind, faiss_index=index, tombstones=tombstones)
