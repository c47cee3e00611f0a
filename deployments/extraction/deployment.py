"""The Extraction deployment: the job-posting pipeline on its own CPU replicas.

Parsing a page (lxml, extruct, html-text, the rules, dateparser) is CPU work that holds
the GIL; run in the ingress, it would sit next to every streaming response. Here it has
replicas of its own, sized and autoscaled from the profile's ``extraction`` block.

The pipeline's one need from the graph, a constrained chat completion, is served by a
:class:`~serve.kernel.dispatcher.Dispatcher` built in this replica from the LLM and Router
handles: the same routing, limits, thermal admission, backpressure and fallback as
``/v1/chat/completions``, with the reply as data (no HTTP in between). A document is
routed once: a repair call goes where the first call went.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from ray.serve.handle import DeploymentHandle
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from deployments.extraction.pipeline import (
    Extraction as ExtractionResult, ExtractionFailed, LlmReply, LlmRequest, PipelineLimits, extract_custom, extract_job_posting,
)
from deployments.extraction.record import job_posting_json_schema, posting_metadata
from deployments.extraction.schemas import job_posting_response_format
from serve.kernel.config import AUTO_MODEL_ID, Profile
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import GraphError, NotFound, Unprocessable, within
from serve.kernel.health import HealthPicture, HealthSnapshot
from serve.kernel.log_filters import quiet_probes
from serve.kernel.protocol import MAX_METADATA_LIST, ExtractRequest
from serve.kernel.routing import RouteDecision, route_input_from_chat
from serve.kernel.settings import load_settings


class Extraction:
    """Runs ``/v1/extract`` documents through the pipeline.

    Args:
        profile: The profile the graph was built from.
        llms: The LLM deployments' handles by role (the pipeline calls the extractor and the reasoner).
        router: Handle to the Router deployment.
        residency: Handle to the residency manager (None when every model is resident).
        collections: Handle to the Collections deployment, where a posting is indexed when
            its request names a collection (None when the profile has none).
    """

    def __init__(self, profile: Profile, llms: dict[str, DeploymentHandle], router: DeploymentHandle,
                 residency: Optional[DeploymentHandle] = None, collections: Optional[DeploymentHandle] = None) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        self._profile = profile
        settings = load_settings()
        # The ingress sends its health picture with each document: no probe loop here.
        self._health = HealthPicture(list(llms))
        self._dispatcher = Dispatcher(profile, {profile.llm(role).model_id: handle for role, handle in llms.items()},
                                      router, self._health, settings, residency)
        self._limits = PipelineLimits.from_profile(profile)
        self._collections = collections
        self._index_timeout_s = settings.embedder_timeout_s

    async def check_health(self) -> None:
        return None

    async def job_posting_schema(self) -> dict[str, Any]:
        """The ``job_posting`` record's JSON schema, and the ``response_format`` that
        ``/v1/extract`` itself sends to the LLM (the same record through
        ``/v1/chat/completions`` with any OpenAI client)."""
        return {
            "name": "job_posting",
            "record_schema": job_posting_json_schema(),
            "response_format": job_posting_response_format(self._profile.extractor.max_tokens_limit),
        }

    async def extract(self, item: ExtractRequest, health: Optional[HealthSnapshot] = None) -> dict[str, Any]:
        """One document, already validated by the ingress → the response body.

        ``health`` is the sending ingress's picture of the graph, which the dispatcher
        reads to skip a model that is down and to degrade when the GPU runs hot.

        Raises:
            Unprocessable: the document has no title, or the schema cannot be filled.
        """
        self._health.update(health)
        return await self._extract(item)

    async def _extract(self, item: ExtractRequest) -> dict[str, Any]:
        kwargs = dict(content_type=item.content_type, base_url=item.base_url, limits=self._limits)
        try:
            if item.schema_ == "job_posting":
                complete = None if item.mode == "fast" else self._completion()
                result = await extract_job_posting(item.document, mode=item.mode, complete=complete, **kwargs)
                response = result.as_response("job_posting")
                if item.collection:
                    response["indexed"] = await self._index(item, result)
                return response
            result = await extract_custom(item.document, item.schema_, mode=item.mode, complete=self._completion(), **kwargs)
            return result.as_response("custom")
        except ExtractionFailed as exc:
            raise Unprocessable(exc.message, param=exc.param, code=exc.code) from None

    async def _index(self, item: ExtractRequest, result: ExtractionResult) -> dict[str, Any]:
        """Put the posting into ``item.collection``: its visible text as the document, the
        record (and each field's source) as its metadata; answered once it is durable."""
        if self._collections is None:
            raise NotFound("collections are disabled in this profile", code="collections_disabled")
        doc_id = item.document_id or f"posting-{hashlib.sha256(item.document.encode()).hexdigest()[:24]}"
        document = {"id": doc_id, "text": (result.text or item.document)[: self._profile.collections.max_document_chars],
                    "metadata": posting_metadata(result.data, result.sources, max_list=MAX_METADATA_LIST)}
        await within(self._collections.upsert.remote(item.collection, [document]), self._index_timeout_s,
                     "the collections service")
        return {"collection": item.collection, "id": doc_id}

    async def extract_many(self, items: list[ExtractRequest], health: Optional[HealthSnapshot] = None) -> list[Any]:
        """Several documents of one batch, one after the other: each one's response body,
        or the error it raised, as a value, so a bad document fails alone.

        The ingress sends a batch in chunks: one handle call per chunk instead of one per
        document was most of what the ingress spent on a batch of small pages.
        """
        self._health.update(health)
        out: list[Any] = []
        for item in items:
            try:
                out.append(await self._extract(item))
            except GraphError as exc:
                out.append(exc)
            except Exception as exc:  # noqa: BLE001 - a bug in one document's path is that item's 500
                out.append(RuntimeError(f"{type(exc).__name__}: {exc}"))
        return out

    def _completion(self):
        """The pipeline's ``complete`` for one document: routed on its first call only."""
        decision: Optional[RouteDecision] = None

        async def complete(call: LlmRequest) -> LlmReply:
            nonlocal decision
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "extraction", "schema": call.json_schema, "strict": True},
            }
            if decision is None:
                decision = await self._decide(call, response_format)
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

    async def _decide(self, call: LlmRequest, response_format: dict[str, Any]) -> RouteDecision:
        if call.role != "auto":
            return self._dispatcher.pinned(call.role, "extraction mode")
        route_input = route_input_from_chat({
            "messages": [{"role": "user", "content": call.route_text[: self._profile.extraction.llm_input_chars]}],
            "response_format": response_format, "max_tokens": call.max_tokens,
        })
        return await self._dispatcher.resolve(AUTO_MODEL_ID, route_input)
