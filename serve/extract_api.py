"""``/v1/extract`` and ``/v1/extract/batch``: the ingress side of the extraction pipeline.

The pipeline itself (``deployments/extraction``) is pure logic. This mixin gives it
the one thing it needs from the graph — a constrained chat completion — by routing
and forwarding through the ingress's own chat path, so extraction gets the same
routing, limits, thermal admission, backpressure and fallback as ``/v1/chat``. Parsing
runs in a worker thread so a large page does not stall the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from deployments.extraction.pipeline import (
    ExtractionFailed,
    LlmReply,
    LlmRequest,
    extract_custom,
    extract_job_posting,
)
from deployments.router.features import route_input_from_chat
from serve.config import AUTO_MODEL_ID
from serve.errors import BadRequest, GraphError, PayloadTooLarge, Unprocessable, client_message, error_body, public_error
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
    """The extraction routes, mixed into the Ingress: they use its ``_profile`` and
    ``_dispatcher`` (every LLM call of the pipeline goes through the dispatcher)."""

    def _llm_caller(self, request: Request):
        async def complete(call: LlmRequest) -> LlmReply:
            from ray.serve.llm.openai_api_models import ChatCompletionRequest

            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": call.json_schema, "strict": True},
            }
            if call.role == "auto":
                route_input = route_input_from_chat({
                    "messages": [{"role": "user", "content": call.route_text[: self._profile.extraction.llm_input_chars]}],
                    "response_format": response_format, "max_tokens": call.max_tokens,
                })
                decision = await self._dispatcher.resolve(AUTO_MODEL_ID, route_input)
            else:
                decision = self._dispatcher.pinned(call.role, "extraction mode")
            body = ChatCompletionRequest(
                model=decision.target, messages=call.messages, max_tokens=call.max_tokens,
                temperature=0.0, response_format=response_format, stream=False,
            )
            if decision.role == "reasoner" and call.thinking_tokens:
                # Extraction needs little thinking; the profile bounds it so the JSON fits.
                body.thinking_token_budget = call.thinking_tokens
            dispatched = await self._dispatcher.dispatch(body, "chat", decision)
            choice = dispatched.reply["choices"][0]
            usage = dispatched.reply.get("usage") or {}
            return LlmReply(
                content=choice["message"].get("content"), finish_reason=choice.get("finish_reason"),
                target=dispatched.decision.target, reason=dispatched.decision.reason, hops=",".join(dispatched.hops),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )

        return complete

    async def _extract_one(self, item: ExtractRequest, request: Request) -> dict[str, Any]:
        spec = self._profile.extraction
        if len(item.document) > spec.max_document_chars:
            raise PayloadTooLarge(
                f"document is {len(item.document)} characters; the limit is {spec.max_document_chars}",
                param="document", code="document_too_long",
            )
        self._dispatcher.admit(llm=item.mode != "fast")
        limits = spec.pipeline_limits(self._profile.extractor, self._profile.reasoner)
        kwargs = dict(content_type=item.content_type, base_url=item.base_url, limits=limits)
        try:
            if item.schema_ == "job_posting":
                complete = None if item.mode == "fast" else self._llm_caller(request)
                result = await extract_job_posting(item.document, mode=item.mode, complete=complete, **kwargs)
                return result.as_response("job_posting")
            result = await extract_custom(item.document, item.schema_, mode=item.mode, complete=self._llm_caller(request), **kwargs)
            return result.as_response("custom")
        except ExtractionFailed as exc:
            raise Unprocessable(exc.message, param=exc.param, code=exc.code) from None

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
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first.get("loc", ()))
                    raise BadRequest(f"documents[{index}].{where}: {first.get('msg')}", param=f"documents[{index}].{where}") from None
                async with gate:
                    return {"index": index, "status": 200, "result": await self._extract_one(item, request)}
            except Exception as exc:  # noqa: BLE001 - one document's failure is its own result
                status, envelope = _failure(exc, request.headers.get("x-request-id", "-"), index)
                return {"index": index, "status": status, **envelope}

        results = await asyncio.gather(*(one(i, raw) for i, raw in enumerate(body.documents)))
        ok = sum(r["status"] == 200 for r in results)
        return {"object": "list", "results": results, "succeeded": ok, "failed": len(results) - ok}
