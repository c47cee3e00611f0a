"""``/v1/collections``: the ingress side of the embedder's document collections.

Requests are validated here against the profile's limits (each one explicit, each
failure a 4xx naming the field); the embedder deployment embeds and stores. Its answers
are ``{"ok": ...}`` or ``{"error": {...}}``, turned into the envelope here.
"""

from __future__ import annotations

import json
from typing import Any

from serve.errors import BadRequest, GraphError, serve_errors_as_http, within
from serve.protocol import SearchRequest, UpsertRequest


class _StoreError(GraphError):
    def __init__(self, status: int, message: str, *, param=None, code=None) -> None:
        self.status_code = status
        super().__init__(message, param=param, code=code)


def unwrap(result: dict[str, Any]) -> Any:
    """The embedder's ``ok`` value, or its error raised as the right 4xx."""
    if "error" in result:
        error = result["error"]
        status = int(error["status"])
        if status >= 500:
            status = 503  # a collection that failed its check: reported, not served
        raise _StoreError(status, error["message"], param=error.get("param"), code=error.get("code"))
    return result["ok"]


class CollectionEndpoints:
    """Mixed into the Ingress; relies on its ``_profile``, ``_embedder`` and admission."""

    def _check_collection_name(self, collection: str) -> None:
        from deployments.embedder.collection import NAME_RULE, valid_collection_name

        if not valid_collection_name(collection):
            raise BadRequest(NAME_RULE, param="collection", code="invalid_collection_name")

    def _check_documents(self, body: UpsertRequest) -> None:
        spec = self._profile.collections
        if len(body.documents) > spec.max_documents_per_request:
            raise BadRequest(f"{len(body.documents)} documents; at most {spec.max_documents_per_request} per request",
                             param="documents", code="too_many_documents")
        seen: set[str] = set()
        for i, doc in enumerate(body.documents):
            where = f"documents[{i}]"
            if len(doc.id) > spec.max_id_chars:
                raise BadRequest(f"{where}.id is longer than {spec.max_id_chars} characters", param=f"{where}.id")
            if doc.id in seen:
                raise BadRequest(f"{where}.id {doc.id!r} appears twice in this request", param=f"{where}.id", code="duplicate_id")
            seen.add(doc.id)
            if len(doc.text) > spec.max_document_chars:
                raise BadRequest(f"{where}.text is longer than {spec.max_document_chars} characters",
                                 param=f"{where}.text", code="document_too_long")
            if len(doc.metadata) > spec.max_metadata_keys:
                raise BadRequest(f"{where}.metadata has more than {spec.max_metadata_keys} keys", param=f"{where}.metadata")
            if len(json.dumps(doc.metadata)) > spec.max_metadata_bytes:
                raise BadRequest(f"{where}.metadata is larger than {spec.max_metadata_bytes} bytes", param=f"{where}.metadata")

    async def upsert_documents(self, collection: str, body: UpsertRequest) -> dict[str, Any]:
        """Add or replace documents; answered once they are durable on disk."""
        self._dispatcher.admit(llm=False)
        self._check_collection_name(collection)
        self._check_documents(body)
        documents = [doc.model_dump() for doc in body.documents]
        with serve_errors_as_http():
            result = unwrap(await within(self._embedder.upsert.remote(collection, documents), self._settings.embedder_timeout_s, "the embedder"))
        return {"object": "collection.upsert", **result, "ids": [d["id"] for d in documents]}

    async def search_collection(self, collection: str, body: SearchRequest) -> dict[str, Any]:
        """The ``k`` documents closest in meaning to ``query`` (best passage each)."""
        self._dispatcher.admit(llm=False)
        self._check_collection_name(collection)
        results = await self._search(collection, body.query, body.k, body.filter)
        return {"object": "list", "collection": collection, "results": results}

    async def _search(self, collection: str, query: str, k: int, filter: Any) -> list[dict[str, Any]]:
        spec = self._profile.collections
        if k > spec.max_k:
            raise BadRequest(f"k={k} exceeds the limit of {spec.max_k}", param="k", code="limit_exceeded")
        if len(query) > spec.max_query_chars:
            raise BadRequest(f"query is longer than {spec.max_query_chars} characters", param="query")
        with serve_errors_as_http():
            return unwrap(await within(self._embedder.search.remote(collection, query, k, filter), self._settings.embedder_timeout_s, "the embedder"))

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        self._check_collection_name(collection)
        with serve_errors_as_http():
            return unwrap(await within(self._embedder.get_document.remote(collection, doc_id), self._settings.embedder_timeout_s, "the embedder"))

    async def delete_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        """Delete one document; answered once the delete is durable."""
        self._check_collection_name(collection)
        with serve_errors_as_http():
            unwrap(await within(self._embedder.delete_document.remote(collection, doc_id), self._settings.embedder_timeout_s, "the embedder"))
        return {"id": doc_id, "object": "collection.document", "deleted": True}

    async def list_collections(self) -> dict[str, Any]:
        with serve_errors_as_http():
            return {"object": "list", "data": unwrap(await within(self._embedder.collection_stats.remote(None), self._settings.embedder_timeout_s, "the embedder"))}

    async def get_collection(self, collection: str) -> dict[str, Any]:
        self._check_collection_name(collection)
        with serve_errors_as_http():
            return unwrap(await within(self._embedder.collection_stats.remote(collection), self._settings.embedder_timeout_s, "the embedder"))

    async def delete_collection(self, collection: str) -> dict[str, Any]:
        self._check_collection_name(collection)
        with serve_errors_as_http():
            unwrap(await within(self._embedder.drop_collection.remote(collection), self._settings.embedder_timeout_s, "the embedder"))
        return {"id": collection, "object": "collection", "deleted": True}



