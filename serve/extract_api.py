"""``/v1/extract`` and ``/v1/extract/batch``: the ingress side of extraction.

The ingress checks sizes and thermal admission, then hands each document to the
Extraction deployment (``deployments/extraction/deployment.py``), which parses it on its
own CPU replicas and calls the LLMs through its own dispatcher. A batch is fanned out
document by document, so Serve spreads it over the Extraction replicas.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from serve.errors import (
    BadRequest,
    GraphError,
    PayloadTooLarge,
    client_message,
    error_body,
    public_error,
    validation_problem,
    within,
)
from serve.protocol import ExtractBatchRequest, ExtractRequest



def _failure(exc: BaseException, request_id: str, index: int) -> tuple[int, dict[str, Any]]:
    """A batch item's error: its status and envelope, 5xx text scrubbed as for requests."""
    from serve.ray_private import OpenAIHTTPException

    where = f"/v1/extract/batch documents[{index}]"
    if isinstance(exc, GraphError):
        status, message, param, code = exc.status_code, exc.message, exc.param, exc.code
    elif isinstance(exc, OpenAIHTTPException) and 400 <= int(exc.status_code) < 500:
        status, message, param, code = int(exc.status_code), client_message(exc.message), None, None
    else:
        status, message, param, code = 500, repr(exc), None, None
    message, code = public_error(status, message, code=code, exc=exc, request_id=request_id, where=where)
    return status, error_body(status, message, param=param, code=code)


class ExtractionEndpoints:
    """The extraction routes, mixed into the Ingress: they check sizes and admission and
    forward each document to the Extraction deployment (its ``_extraction`` handle)."""

    async def _extract_one(self, item: ExtractRequest, request: Request) -> dict[str, Any]:
        spec = self._profile.extraction
        if len(item.document) > spec.max_document_chars:
            raise PayloadTooLarge(
                f"document is {len(item.document)} characters; the limit is {spec.max_document_chars}",
                param="document", code="document_too_long",
            )
        self._dispatcher.admit(llm=item.mode != "fast")
        return await within(self._extraction.extract.remote(item.model_dump(by_alias=True), self._health.snapshot()),
                            self._settings.extraction_timeout_s, "the extraction service")

    async def extract(self, body: ExtractRequest, request: Request) -> dict[str, Any]:
        """One document → a validated record with per-field sources (or a 4xx)."""
        return await self._extract_one(body, request)

    async def job_posting_schema(self) -> dict[str, Any]:
        """The ``job_posting`` record's JSON schema, and a ``response_format`` for chat.

        The response format is what ``/v1/extract`` itself sends to the LLM: the same
        record through ``/v1/chat/completions`` with any OpenAI client.
        """
        from deployments.extraction.record import job_posting_json_schema
        from deployments.extraction.schemas import job_posting_response_format

        return {
            "name": "job_posting",
            "record_schema": job_posting_json_schema(),
            "response_format": job_posting_response_format(self._profile.extractor.max_tokens_limit),
        }

    async def extract_batch(self, body: ExtractBatchRequest, request: Request) -> dict[str, Any]:
        """Many documents, processed concurrently; one result or one error each, in order."""
        spec = self._profile.extraction
        if not body.documents:
            raise BadRequest("documents must not be empty", param="documents")
        if len(body.documents) > spec.max_batch_documents:
            raise BadRequest(
                f"{len(body.documents)} documents; at most {spec.max_batch_documents} per batch",
                param="documents", code="too_many_documents",
            )
        gate = asyncio.Semaphore(spec.batch_concurrency)

        async def one(index: int, raw: Any) -> dict[str, Any]:
            try:
                fields = {"document": raw} if isinstance(raw, str) else raw
                if not isinstance(fields, dict):
                    raise BadRequest(f"documents[{index}] must be a string or an object", param=f"documents[{index}]")
                fields = {"schema": body.schema_, "mode": body.mode, **fields}
                try:
                    item = ExtractRequest.model_validate(fields)
                except ValidationError as exc:
                    message, param = validation_problem(exc.errors(), f"documents[{index}]")
                    raise BadRequest(message, param=param) from None
                async with gate:
                    return {"index": index, "status": 200, "result": await self._extract_one(item, request)}
            except Exception as exc:  # noqa: BLE001 - one document's failure is its own result
                status, envelope = _failure(exc, request.headers.get("x-request-id", "-"), index)
                return {"index": index, "status": status, **envelope}

        results = await asyncio.gather(*(one(i, raw) for i, raw in enumerate(body.documents)))
        ok = sum(r["status"] == 200 for r in results)
        return {"object": "list", "results": results, "succeeded": ok, "failed": len(results) - ok}
