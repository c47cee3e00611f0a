"""``/v1/extract`` and ``/v1/extract/batch``: the shell's side of extraction.

The service checks sizes and thermal admission, then hands each document to the
Extraction deployment (``deployments/extraction/deployment.py``), which parses it on its
own CPU replicas and calls the LLMs through its own dispatcher. A batch is sent in
chunks of a few documents (one handle call each), so Serve spreads it over the
Extraction replicas while the ingress pays for a handful of calls, not one per document.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from pydantic import ValidationError

from serve.kernel.config import Profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadRequest, PayloadTooLarge, failure_envelope, validation_problem, within
from serve.kernel.health import HealthPicture
from serve.kernel.protocol import COLLECTION_NAME_RULE, ExtractBatchRequest, ExtractRequest, valid_collection_name

#: Most documents one call to the Extraction deployment carries.
MAX_CHUNK = 8


class ExtractionService:
    """Check sizes and admission, and send each document to the Extraction deployment.

    Args:
        profile: The profile (``extraction`` holds the limits).
        dispatcher: Admission (LLM modes are shed first on a hot GPU).
        extraction: The Extraction deployment's handle.
        health: The replica's health picture, sent with each call (the Extraction
            deployment's dispatcher probes nothing itself).
        timeout_s: Longest wait for one document.
    """

    def __init__(self, profile: Profile, dispatcher: Dispatcher, extraction: Any, health: HealthPicture, *,
                 timeout_s: float) -> None:
        self._spec = profile.extraction
        self._dispatcher = dispatcher
        self._extraction = extraction
        self._health = health
        self._timeout_s = timeout_s

    def _check(self, item: ExtractRequest) -> None:
        """Sizes, and a collection to index into that can exist."""
        self._check_size(item)
        if item.collection is not None:
            if not valid_collection_name(item.collection):
                raise BadRequest(COLLECTION_NAME_RULE, param="collection", code="invalid_collection_name")
            if item.schema_ != "job_posting":
                raise BadRequest("only job_posting records are indexed into a collection", param="collection")

    def _check_size(self, item: ExtractRequest) -> None:
        limit = self._spec.max_document_chars
        if len(item.document) > limit:
            raise PayloadTooLarge(
                f"document is {len(item.document)} characters; the limit is {limit}",
                param="document", code="document_too_long",
            )

    async def extract(self, body: ExtractRequest) -> dict[str, Any]:
        """One document → a validated record with per-field sources (or a 4xx)."""
        self._check(body)
        self._dispatcher.admit(llm=body.mode != "fast")
        return await within(self._extraction.extract.remote(body, self._health.snapshot()), self._timeout_s,
                            "the extraction service")

    async def job_posting_schema(self) -> dict[str, Any]:
        """The ``job_posting`` record's JSON schema, and a ``response_format`` for chat,
        as the Extraction deployment, which owns the record, describes them."""
        return await within(self._extraction.job_posting_schema.remote(), self._timeout_s, "the extraction service")

    async def extract_batch(self, body: ExtractBatchRequest, request_id: str) -> dict[str, Any]:
        """Many documents, processed concurrently; one result or one error each, in order
        (``request_id`` names the request in the scrubbed 5xx messages)."""
        spec = self._spec
        if not body.documents:
            raise BadRequest("documents must not be empty", param="documents")
        if len(body.documents) > spec.max_batch_documents:
            raise BadRequest(
                f"{len(body.documents)} documents; at most {spec.max_batch_documents} per batch",
                param="documents", code="too_many_documents",
            )
        results: list[Optional[dict[str, Any]]] = [None] * len(body.documents)
        valid: list[tuple[int, ExtractRequest]] = []
        for index, raw in enumerate(body.documents):
            try:
                valid.append((index, self._batch_item(index, raw, body)))
            except Exception as exc:  # noqa: BLE001 - one document's failure is its own result
                results[index] = _item_result(index, exc, request_id)
        gate = asyncio.Semaphore(spec.batch_concurrency)

        async def run(chunk: list[tuple[int, ExtractRequest]]) -> None:
            async with gate:  # a chunk's documents run one after the other: at most batch_concurrency at once
                try:
                    self._dispatcher.admit(llm=any(item.mode != "fast" for _, item in chunk))
                    outcomes = await within(
                        self._extraction.extract_many.remote([item for _, item in chunk], self._health.snapshot()),
                        self._timeout_s * len(chunk), "the extraction service")
                except Exception as exc:  # noqa: BLE001 - the chunk's documents all fail with it
                    outcomes = [exc] * len(chunk)
            for (index, _), outcome in zip(chunk, outcomes):
                results[index] = _item_result(index, outcome, request_id)

        size = chunk_size(len(valid), spec.batch_concurrency)
        await asyncio.gather(*(run(valid[i:i + size]) for i in range(0, len(valid), size)))
        ok = sum(r["status"] == 200 for r in results)
        return {"object": "list", "results": results, "succeeded": ok, "failed": len(results) - ok}

    def _batch_item(self, index: int, raw: Any, body: ExtractBatchRequest) -> ExtractRequest:
        """``documents[index]`` as a request of its own (the batch's schema and mode unless
        it sets them), checked like one."""
        fields = {"document": raw} if isinstance(raw, str) else raw
        if not isinstance(fields, dict):
            raise BadRequest(f"documents[{index}] must be a string or an object", param=f"documents[{index}]")
        try:
            item = ExtractRequest.model_validate({"schema": body.schema_, "mode": body.mode, **fields})
        except ValidationError as exc:
            message, param = validation_problem(exc.errors(), f"documents[{index}]")
            raise BadRequest(message, param=param) from None
        self._check(item)
        return item


def chunk_size(documents: int, concurrency: int) -> int:
    """Documents per Extraction call: about two chunks per slot, so replicas stay busy
    when documents take unequal time, and at most :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, -(-documents // (2 * concurrency))))


def _item_result(index: int, outcome: Any, request_id: str) -> dict[str, Any]:
    if isinstance(outcome, BaseException):
        status, envelope = failure_envelope(outcome, request_id=request_id, where=f"/v1/extract/batch documents[{index}]")
        return {"index": index, "status": status, **envelope}
    return {"index": index, "status": 200, "result": outcome}
