"""The HTTP ingress: one OpenAI-compatible front door for the whole graph.

Endpoints are a few lines each: validate, hand the work to the :class:`Dispatcher`
(chat, completions, the route dry run, extraction's LLM calls) or to the embedder, and
set the route headers. Everything between a request and a model (routing, admission,
fallback) lives in ``serve/dispatcher.py``; the graph's health and thermal picture in
``serve/health.py``; the model cards in ``serve/model_cards.py``. The extraction and
collection routes are their own classes, mixed in.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import make_fastapi_ingress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from deployments.router.decision import RouteDecision
from deployments.router.features import RouteInput, last_user_text, route_input_from_chat
from serve import rag
from serve.collections_api import CollectionEndpoints
from serve.config import AUTO_MODEL_ID, Profile
from serve.conformance import check_chat_reply, needs_check
from serve.core_plan import keep_to_control_plane
from serve.dispatcher import Dispatched, Dispatcher, structured_fields
from serve.errors import BadRequest, NotFound, install_error_handlers, validation_problem, within
from serve.extract_api import ExtractionEndpoints
from serve.health import HealthCache
from serve.log_filters import quiet_probes
from serve.browser_guard import BrowserGuardMiddleware
from serve.middleware import MAX_HEADER_BYTES, ApiKeyMiddleware, BodyLimitMiddleware, CatchAllMiddleware, HeaderLimitMiddleware
from serve.model_cards import model_cards
from serve.models_api import ModelEndpoints
from serve.observability import RequestMetricsMiddleware
from serve.protocol import (
    CHAT_ROLES,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    RetrievalOptions,
    unknown_role,
)
from serve.ray_private import RawRequestInfo
from serve.router_client import InProcessRouter
from serve.settings import Settings, configured_admin_keys, configured_api_keys, load_settings

ROUTE_TARGET_HEADER = "x-route-target"
ROUTE_REASON_HEADER = "x-route-reason"
ROUTE_HOPS_HEADER = "x-route-hops"
RANDOM_WEIGHTS_HEADER = "x-route-random-weights"
WAKE_HEADER = "x-model-wake-ms"


def _check_roles(body: ChatCompletionRequest) -> None:
    """Refuse a message role the OpenAI API does not have (chat and its dry run /v1/route)."""
    if (bad := unknown_role(body.messages)) is not None:
        raise BadRequest(f"messages[{bad[0]}].role {bad[1]!r} is not one of {sorted(CHAT_ROLES)}",
                         param=f"messages[{bad[0]}].role", code="invalid_role")


def _route_asks(request: Request) -> dict[str, Any]:
    """What the request's headers ask of routing: a pin (``x-route``), and random-weight
    models allowed for ``auto`` (``x-route-random-weights: allow``)."""
    allow = request.headers.get(RANDOM_WEIGHTS_HEADER, "").strip().lower() == "allow"
    return {"pin": request.headers.get("x-route"), "allow_random_weights": allow}


def _route_input(body: ChatCompletionRequest) -> RouteInput:
    fields = {"messages", "tools", "response_format", "max_tokens", "max_completion_tokens"}
    return route_input_from_chat(body.model_dump(include=fields))


def _response(dispatched: Dispatched, reply: Optional[dict[str, Any]] = None, headers: Optional[dict[str, str]] = None) -> Response:
    """The HTTP answer for a dispatched request, with the route headers."""
    all_headers = {
        ROUTE_TARGET_HEADER: dispatched.decision.target,
        ROUTE_REASON_HEADER: dispatched.decision.reason,
        ROUTE_HOPS_HEADER: ",".join(dispatched.hops),
        **(headers or {}),
    }
    if dispatched.wake_ms:
        all_headers[WAKE_HEADER] = f"{dispatched.wake_ms:.0f}"
    if dispatched.stream is not None:
        return StreamingResponse(dispatched.stream, media_type="text/event-stream", headers=all_headers)
    return JSONResponse(content=reply if reply is not None else dispatched.reply, headers=all_headers)


class Ingress(ModelEndpoints, ExtractionEndpoints, CollectionEndpoints):
    """HTTP entry point of the graph.

    Args:
        profile: The validated profile the graph was built from.
        llms: The LLM deployments' handles by role.
        embedder: Handle to the Embedder deployment.
        router: Handle to the Router deployment.
        monitor: Handle to the GpuMonitor deployment.
        extraction: Handle to the Extraction deployment.
        collections: Handle to the Collections deployment (None when the profile has none).
        residency: Handle to the residency manager (None when every model is resident).

    Environment settings are read in the replica, not bound: bound arguments are pickled
    into Serve's checkpoint, and the settings hold the API keys.
    """

    def __init__(
        self,
        profile: Profile,
        llms: dict[str, DeploymentHandle],
        embedder: DeploymentHandle,
        router: DeploymentHandle,
        monitor: DeploymentHandle,
        extraction: DeploymentHandle,
        collections: Optional[DeploymentHandle] = None,
        residency: Optional[DeploymentHandle] = None,
    ) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/core_plan.py)
        self._profile = profile
        self._settings = load_settings()
        self._cards = model_cards(profile)
        self._embedder = embedder
        self._monitor = monitor
        self._extraction = extraction
        self._collections = collections
        self._residency = residency
        deployments = {**llms, "embedder": embedder, "router": router, "monitor": monitor, "extraction": extraction}
        if collections is not None:
            deployments["collections"] = collections
        if residency is not None:
            deployments["residency"] = residency
        self._health = HealthCache(
            deployments,
            monitor, probe_timeout_s=self._settings.readiness_timeout_s,
            ready_message=(
                f"local-llm-graph is ready (profile {profile.name}): all {len(deployments)} deployments answer. "
                "OpenAI API under /v1 and its docs at /docs on Serve's HTTP address (http://127.0.0.1:8000 "
                "by default); the Ray dashboard on port 8265."
            ),
            residency=residency,
        )
        self._local_router = None
        if profile.router.embeds_in_process(profile.embedder):
            from deployments.llm.sources import resolve_source

            self._local_router = InProcessRouter(profile, resolve_source(profile.embedder.source, cache_dir=self._settings.cache_dir))
        self._dispatcher = Dispatcher(
            profile, {profile.llm(role).model_id: handle for role, handle in llms.items()},
            self._local_router or router, self._health, self._settings, residency,
        )

    async def check_health(self) -> None:
        """Serve's health check: the ingress answers (and its health loop is running);
        the first one also starts the in-process router's warm-up."""
        self._health.watch()
        if self._local_router is not None:
            await self._local_router.warm_up()

    # ------------------------------------------------------------------- chat
    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions, with ``model: "auto"`` routed, and optional retrieval."""
        _check_roles(body)
        self._dispatcher.admit(llm=True)
        retrieval = self._retrieval_options(body)
        found: list[dict[str, Any]] = []
        if retrieval is not None:
            query, found = await self._retrieve(body, retrieval)
        decision = await self._dispatcher.resolve(body.model, _route_input(body), **_route_asks(request))
        dispatched = await self._dispatcher.dispatch(body, "chat", decision, RawRequestInfo.from_starlette_request(request))
        headers = {"x-retrieval-ids": rag.retrieval_ids_header(found)} if retrieval is not None else {}
        if dispatched.stream is not None:
            return _response(dispatched, headers=headers)
        reply = dispatched.reply
        fields = structured_fields(body)
        if "choices" in reply and needs_check(fields):
            reply = check_chat_reply(fields, reply)
        if retrieval is not None:
            reply = rag.attach(reply, retrieval.collection, query, found)
        return _response(dispatched, reply, headers)

    @staticmethod
    def _retrieval_options(body: ChatCompletionRequest) -> Optional[RetrievalOptions]:
        extra = body.__pydantic_extra__ or {}
        if "retrieval" not in extra:
            return None
        raw = extra.pop("retrieval")  # ours, not the engine's
        try:
            return RetrievalOptions.model_validate(raw)
        except ValidationError as exc:
            message, param = validation_problem(exc.errors(), "retrieval")
            raise BadRequest(message, param=param) from None

    async def _retrieve(self, body: ChatCompletionRequest, retrieval: RetrievalOptions) -> tuple[str, list[dict[str, Any]]]:
        """Search the collection and put the passages in the request's context."""
        self._check_collection_name(retrieval.collection)
        query = retrieval.query or last_user_text(body.messages)
        if not query.strip():
            raise BadRequest("retrieval needs a user message (or retrieval.query) to search with", param="retrieval.query")
        results = await self._search(retrieval.collection, query, retrieval.k, retrieval.filter)
        body.messages = rag.with_context(body.messages, rag.context_message(results, self._profile.collections.rag_context_chars))
        return query, results

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        """OpenAI text completions, with ``model: "auto"`` routed on the prompt."""
        self._dispatcher.admit(llm=True)
        prompt = body.prompt
        text = prompt if isinstance(prompt, str) else " ".join(p for p in prompt if isinstance(p, str)) if isinstance(prompt, list) else ""
        route_input = RouteInput(text=text, last_user_text=text, max_tokens=body.max_tokens)
        decision = await self._dispatcher.resolve(body.model, route_input, **_route_asks(request))
        return _response(await self._dispatcher.dispatch(body, "completions", decision, RawRequestInfo.from_starlette_request(request)))

    async def route(self, body: ChatCompletionRequest, request: Request) -> RouteDecision:
        """Dry run: the decision a chat body would get, with score and features (admitted
        as a chat request is: a dry run costs a routing decision)."""
        _check_roles(body)
        self._dispatcher.admit(llm=True)
        return await self._dispatcher.resolve(body.model, _route_input(body), **_route_asks(request))

    # ------------------------------------------------------------- embeddings
    async def embeddings(self, body: EmbeddingsRequest, request: Request) -> EmbeddingsResponse:
        """OpenAI embeddings from the sentence-transformers embedder."""
        self._dispatcher.admit(llm=False)
        spec = self._profile.embedder
        if body.model not in (spec.model_id, AUTO_MODEL_ID):
            if body.model in self._dispatcher.specs:
                raise BadRequest(f"model {body.model!r} is not an embedding model", param="model", code="model_not_supported")
            raise NotFound(f"model {body.model!r} does not exist", param="model", code="model_not_found")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise BadRequest("input must not be empty", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest("token arrays are not supported; send text", param="input")
        if len(texts) > spec.max_inputs_per_request:
            raise BadRequest(f"at most {spec.max_inputs_per_request} inputs per request", param="input", code="too_many_inputs")
        for i, text in enumerate(texts):
            if not text:
                raise BadRequest(f"input[{i}] is empty", param="input")
            if len(text) > spec.max_input_chars:
                raise BadRequest(f"input[{i}] is longer than {spec.max_input_chars} characters", param="input", code="input_too_long")
        if body.dimensions is not None and body.dimensions != spec.dimensions:
            raise BadRequest(f"this model only produces {spec.dimensions} dimensions", param="dimensions")

        result = await within(self._embedder.embed.remote(texts), self._settings.embedder_timeout_s, "the embedder")
        data = []
        for i, vector in enumerate(result["vectors"]):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            else:
                value = vector.tolist()
            data.append(EmbeddingItem(index=i, embedding=value))
        tokens = int(result["tokens"])
        return EmbeddingsResponse(data=data, model=spec.model_id, usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens))

    # ----------------------------------------------------------------- health
    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        """Readiness: every deployment answered its last health check."""
        self._health.watch()
        if "unknown" in self._health.statuses().values():
            await self._health.refresh()  # the first call, before the loop has run
        deployments = self._health.statuses()
        try:
            gpu = await asyncio.wait_for(self._monitor.snapshot.remote(), self._settings.readiness_timeout_s)
        except Exception:  # noqa: BLE001 - the GPU picture is informative only
            gpu = {"available": None}
        ready = all(status == "ok" for status in deployments.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not_ready", "profile": self._profile.name,
                     "deployments": deployments, "gpu": gpu},
        )


ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "sleep_model": lambda app: app.post("/v1/models/{model:path}/sleep"),
    "wake_model": lambda app: app.post("/v1/models/{model:path}/wake"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "completions": lambda app: app.post("/v1/completions"),
    "embeddings": lambda app: app.post("/v1/embeddings", response_model=EmbeddingsResponse),
    "route": lambda app: app.post("/v1/route", response_model=RouteDecision),
    "extract": lambda app: app.post("/v1/extract"),
    "extract_batch": lambda app: app.post("/v1/extract/batch"),
    "job_posting_schema": lambda app: app.get("/v1/schemas/job_posting"),
    "list_collections": lambda app: app.get("/v1/collections"),
    "get_collection": lambda app: app.get("/v1/collections/{collection}"),
    "delete_collection": lambda app: app.delete("/v1/collections/{collection}"),
    "upsert_documents": lambda app: app.post("/v1/collections/{collection}/documents"),
    "get_document": lambda app: app.get("/v1/collections/{collection}/documents/{doc_id:path}"),
    "delete_document": lambda app: app.delete("/v1/collections/{collection}/documents/{doc_id:path}"),
    "search_collection": lambda app: app.post("/v1/collections/{collection}/search"),
    "healthz": lambda app: app.get("/healthz"),
    "readyz": lambda app: app.get("/readyz"),
}


def build_ingress_app(settings: Settings, targets: frozenset[str] = frozenset(), *, keys: Optional[frozenset[str]] = None) -> FastAPI:
    """The FastAPI app of the ingress: error envelope and middleware, no routes yet.

    The app is pickled with the ingress class, so it holds no secret: by default the
    API keys are read inside the replica (:func:`configured_api_keys`).

    Args:
        settings: Environment settings (the body limit).
        targets: Model ids the request metrics may name as a target.
        keys: Fixed API keys instead (unit tests).
    """
    app = FastAPI(
        title="local-llm-graph",
        description="Several local LLMs as one Ray Serve graph, OpenAI-compatible.",
    )
    install_error_handlers(app)
    # Starlette applies the last added middleware first: catch-all outermost, then
    # authentication, then the body limit (so unauthenticated bodies are never read).
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=MAX_HEADER_BYTES)
    key_source = configured_api_keys if keys is None else keys
    app.add_middleware(BrowserGuardMiddleware, keys=key_source, any_host=settings.allow_unauthenticated)
    app.add_middleware(ApiKeyMiddleware, keys=key_source, admins=configured_admin_keys if keys is None else None)
    app.add_middleware(CatchAllMiddleware)
    # Outermost: counts every answer, the catch-all's and the auth middleware's included.
    app.add_middleware(RequestMetricsMiddleware, known_targets=set(targets))
    return app


def make_ingress_class(settings: Settings, targets: frozenset[str] = frozenset()) -> type:
    """The ingress class bound to a FastAPI app carrying our middleware and errors."""
    return make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=build_ingress_app(settings, targets))
