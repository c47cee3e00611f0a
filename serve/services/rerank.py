"""``/v1/rerank`` (and ``/v2/rerank``): documents ordered by relevance to a query.

The Cohere/Jina shape that LiteLLM, LangChain and vLLM's own server speak: ``query``,
``documents`` (strings or ``{"text": ...}`` objects), ``top_n``, ``return_documents``.
Scores are the cosine similarity of the embedder's vectors (a bi-encoder: the same
model that indexes the collections, so a rerank agrees with a search); the response
names the model that scored. The query and documents are embedded in one call, so they
are bounded by the embedder's limits as ``/v1/embeddings`` inputs are.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve.kernel.errors import BadRequest
from serve.kernel.protocol import EmbeddingsRequest, new_id
from serve.services.embeddings import EmbeddingsService


class RerankRequest(BaseModel):
    """``POST /v1/rerank``."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(None, description="The embedder's id (default: the embedder).")
    query: str = Field(min_length=1)
    documents: list[Union[str, dict[str, Any]]] = Field(min_length=1)
    top_n: Optional[int] = Field(None, ge=1)
    return_documents: bool = True
    max_tokens_per_doc: Optional[int] = Field(None, ge=1, description="Accepted; the embedder truncates at its own "
                                              "limit.")


def _document_text(document: Union[str, dict[str, Any]], index: int) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document.get("text"), str):
        return document["text"]
    raise BadRequest(f"documents[{index}] must be a string or an object with a 'text' string",
                     param=f"documents[{index}]", code="invalid_document")


class RerankService:
    """Rerank documents with the profile's embedding model."""

    def __init__(self, embeddings: EmbeddingsService, *, max_inputs: int, model_id: str) -> None:
        self._embeddings = embeddings
        self._max_inputs = max_inputs
        self._model_id = model_id

    async def rerank(self, body: RerankRequest) -> dict[str, Any]:
        """The documents' indexes and scores, most relevant first (``top_n`` of them)."""
        if len(body.documents) + 1 > self._max_inputs:
            raise BadRequest(f"at most {self._max_inputs - 1} documents per request", param="documents",
                             code="too_many_inputs")
        texts = [_document_text(document, index) for index, document in enumerate(body.documents)]
        embedded = await self._embeddings.embed(EmbeddingsRequest(model=body.model or self._model_id,
                                                                  input=[body.query, *texts]))
        vectors = np.asarray([item.embedding for item in embedded.data], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        norms[norms == 0] = 1.0
        unit = vectors / norms[:, None]
        scores = unit[1:] @ unit[0]
        order = np.argsort(-scores, kind="stable")[: body.top_n or len(texts)]
        results = []
        for index in order:
            result: dict[str, Any] = {"index": int(index), "relevance_score": float(scores[index])}
            if body.return_documents:
                result["document"] = {"text": texts[index]}
            results.append(result)
        return {"id": new_id("rerank-"), "model": embedded.model, "results": results,
                "usage": {"total_tokens": embedded.usage.total_tokens}}
