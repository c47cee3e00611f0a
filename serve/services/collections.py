"""``/v1/collections``: the shell's side of the document collections.

Requests are validated here against the profile's limits (each one explicit, each
failure a 4xx naming the field); the Collections deployment embeds (through the
Embedder) and stores, and its errors arrive as the application's typed errors. Chat's
retrieval step searches through :meth:`CollectionsService.find`, under the same limits.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from serve.kernel.config import Profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadRequest, NotFound, within
from serve.kernel.protocol import COLLECTION_NAME_RULE, SearchRequest, UpsertRequest, valid_collection_name


class CollectionsService:
    """Add, search and remove documents in the graph's collections.

    Args:
        profile: The profile (``collections`` holds the limits).
        dispatcher: Admission (a hot GPU sheds requests here too).
        collections: The Collections deployment's handle; None when the profile has none.
        timeout_s: Longest wait for the Collections deployment (it embeds, then stores).
    """

    def __init__(self, profile: Profile, dispatcher: Dispatcher, collections: Optional[Any], *, timeout_s: float) -> None:
        self._spec = profile.collections
        self._dispatcher = dispatcher
        self._collections = collections
        self._timeout_s = timeout_s

    def check_name(self, collection: str) -> None:
        """Refuse a name that no collection can have, before anything is asked."""
        if not valid_collection_name(collection):
            raise BadRequest(COLLECTION_NAME_RULE, param="collection", code="invalid_collection_name")

    def _check_documents(self, body: UpsertRequest) -> None:
        spec = self._spec
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

    async def _ask(self, method: str, *args: Any) -> Any:
        """Call the Collections deployment, bounded in time; its typed errors pass through."""
        if self._collections is None:
            raise NotFound("collections are disabled in this profile", code="collections_disabled")
        return await within(getattr(self._collections, method).remote(*args), self._timeout_s, "the collections service")

    async def upsert(self, collection: str, body: UpsertRequest) -> dict[str, Any]:
        """Add or replace documents; answered once they are durable on disk."""
        self._dispatcher.admit(llm=False)
        self.check_name(collection)
        self._check_documents(body)
        documents = [doc.model_dump() for doc in body.documents]
        result = await self._ask("upsert", collection, documents)
        return {"object": "collection.upsert", **result, "ids": [d["id"] for d in documents]}

    async def search(self, collection: str, body: SearchRequest) -> dict[str, Any]:
        """The ``k`` documents closest in meaning to ``query`` (best passage each)."""
        self._dispatcher.admit(llm=False)
        self.check_name(collection)
        results = await self.find(collection, body.query, body.k, body.filter)
        return {"object": "list", "collection": collection, "results": results}

    async def find(self, collection: str, query: str, k: int, filter: Any) -> list[dict[str, Any]]:
        """The passages of a search, under the profile's limits (no admission: the
        caller has been admitted)."""
        spec = self._spec
        if k > spec.max_k:
            raise BadRequest(f"k={k} exceeds the limit of {spec.max_k}", param="k", code="limit_exceeded")
        if len(query) > spec.max_query_chars:
            raise BadRequest(f"query is longer than {spec.max_query_chars} characters", param="query")
        return await self._ask("search", collection, query, k, filter)

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        self.check_name(collection)
        return await self._ask("get_document", collection, doc_id)

    async def delete_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        """Delete one document; answered once the delete is durable."""
        self.check_name(collection)
        await self._ask("delete_document", collection, doc_id)
        return {"id": doc_id, "object": "collection.document", "deleted": True}

    async def list(self) -> dict[str, Any]:
        return {"object": "list", "data": await self._ask("stats", None)}

    async def get(self, collection: str) -> dict[str, Any]:
        self.check_name(collection)
        return await self._ask("stats", collection)

    async def drop(self, collection: str) -> dict[str, Any]:
        self.check_name(collection)
        await self._ask("drop", collection)
        return {"id": collection, "object": "collection", "deleted": True}
