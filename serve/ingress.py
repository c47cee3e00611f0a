"""The HTTP ingress: one OpenAI-compatible front door for the whole graph.

The ingress wires and calls: its constructor builds the replica's health cache, its
dispatcher and one service per API area (``serve/services/``), and each endpoint
passes the validated body to its service and turns the answer into HTTP (the route
headers, JSON or SSE). Everything between a request and a model lives in the
services and the kernel's dispatcher (``serve/kernel/dispatcher.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import make_fastapi_ingress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serve.anthropic_errors import AnthropicErrorMiddleware
from serve.browser_guard import BrowserGuardMiddleware
from serve.kernel.batch_protocol import BatchCreateRequest
from serve.kernel.config import Profile
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import install_error_handlers
from serve.kernel.health import HealthCache
from serve.kernel.log_filters import quiet_probes
from serve.kernel.messages_protocol import CountTokensRequest, MessagesRequest
from serve.kernel.observability import RequestMetricsMiddleware
from serve.kernel.protocol import EmbeddingsRequest, EmbeddingsResponse, ExtractBatchRequest, ExtractRequest, SearchRequest, UpsertRequest
from serve.kernel.ray_private import RawRequestInfo
from serve.kernel.responses_protocol import ResponsesRequest
from serve.kernel.routing import RouteDecision
from serve.kernel.settings import Settings, configured_admin_keys, configured_api_keys, load_settings
from serve.middleware import KEY_OWNER, MAX_HEADER_BYTES, ApiKeyMiddleware, BodyLimitMiddleware, CatchAllMiddleware, HeaderLimitMiddleware
from serve.model_cards import model_cards
from serve.services.batch_runner import BatchRunner
from serve.services.batches import BatchesService
from serve.services.chat import Answer, ChatService, RouteAsks
from serve.services.collections import CollectionsService
from serve.services.embeddings import EmbeddingsService
from serve.services.extraction import ExtractionService
from serve.services.messages import MessagesService
from serve.services.models import ModelsService
from serve.services.rerank import RerankRequest, RerankService
from serve.services.responses import ResponsesService
from serve.services.retrieval import Retrieval

ROUTE_TARGET_HEADER = "x-route-target"
ROUTE_REASON_HEADER = "x-route-reason"
ROUTE_HOPS_HEADER = "x-route-hops"
RANDOM_WEIGHTS_HEADER = "x-route-random-weights"
WAKE_HEADER = "x-model-wake-ms"
#: What a multipart upload carries besides the file (boundaries, the purpose field).
MULTIPART_SLACK_BYTES = 64 * 1024


def _route_asks(request: Request) -> RouteAsks:
    """What the request's headers ask of routing: a pin (``x-route``), and random-weight
    models allowed for ``auto`` (``x-route-random-weights: allow``)."""
    allow = request.headers.get(RANDOM_WEIGHTS_HEADER, "").strip().lower() == "allow"
    return RouteAsks(pin=request.headers.get("x-route"), allow_random_weights=allow)


def _owner(request: Request) -> str:
    """Whose stored responses a request may read: its API key's digest ("" without keys)."""
    return getattr(request.state, KEY_OWNER, "")


def _response(answer: Answer) -> Response:
    """The HTTP answer of a chat, completion, response or message, with the route headers."""
    dispatched = answer.dispatched
    headers = {
        ROUTE_TARGET_HEADER: dispatched.decision.target,
        ROUTE_REASON_HEADER: dispatched.decision.reason,
        ROUTE_HOPS_HEADER: ",".join(dispatched.hops),
        **answer.headers,
    }
    if dispatched.wake_ms:
        headers[WAKE_HEADER] = f"{dispatched.wake_ms:.0f}"
    if dispatched.stream is not None:
        return StreamingResponse(dispatched.stream, media_type="text/event-stream", headers=headers)
    return JSONResponse(content=answer.reply, headers=headers)


class Ingress:
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
        local_router: Builds a Router in this process, for profiles whose Router embeds
            prompts itself (``deployments/router/in_process.py``); None asks the Router deployment.
        batches: Handle to the Batches deployment, the job store (None when the profile
            turns batches off); this replica's batch runner answers its lines.
        node_monitors: The GpuMonitor of each node group with a GPU, by group (one per
            node group, on its nodes): admission follows the hottest, readiness shows each.

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
        local_router: Optional[Callable[[], Any]] = None,
        batches: Optional[DeploymentHandle] = None,
        node_monitors: Optional[dict[str, DeploymentHandle]] = None,
    ) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        settings = load_settings()
        deployments = {**llms, "embedder": embedder, "router": router, "monitor": monitor, "extraction": extraction}
        if collections is not None:
            deployments["collections"] = collections
        if residency is not None:
            deployments["residency"] = residency
        if batches is not None:
            deployments["batches"] = batches
        node_monitors = dict(node_monitors or {})
        deployments.update({f"monitor_{group}": handle for group, handle in node_monitors.items()})
        self._health = HealthCache(
            deployments,
            monitor, probe_timeout_s=settings.readiness_timeout_s,
            ready_message=(
                f"local-llm-graph is ready (profile {profile.name}): all {len(deployments)} deployments answer. "
                "OpenAI API under /v1 and its docs at /docs on Serve's HTTP address (http://127.0.0.1:8000 "
                "by default); the Ray dashboard on port 8265."
            ),
            residency=residency, node_monitors=node_monitors,
        )
        self._local_router = local_router() if local_router is not None else None
        dispatcher = Dispatcher(
            profile, {profile.llm(role).model_id: handle for role, handle in llms.items()},
            self._local_router or router, self._health, settings, residency,
        )
        self._collections = CollectionsService(profile, dispatcher, collections, timeout_s=settings.embedder_timeout_s)
        self._chat = ChatService(dispatcher, Retrieval(self._collections,
                                                       context_chars=profile.collections.rag_context_chars))
        self._embeddings = EmbeddingsService(profile, dispatcher, embedder, timeout_s=settings.embedder_timeout_s)
        self._extraction = ExtractionService(profile, dispatcher, extraction, self._health,
                                             timeout_s=settings.extraction_timeout_s)
        self._models = ModelsService(profile, model_cards(profile), self._health, monitor, residency,
                                     timeout_s=settings.readiness_timeout_s, node_monitors=node_monitors)
        self._batches = BatchesService(profile.batch, batches, timeout_s=settings.embedder_timeout_s)
        self._responses = ResponsesService(self._chat, batches, timeout_s=settings.embedder_timeout_s)
        self._messages = MessagesService(self._chat)
        self._rerank = RerankService(self._embeddings, max_inputs=profile.embedder.max_inputs_per_request,
                                     model_id=profile.embedder.model_id)
        self._runner = BatchRunner(profile.batch, batches, dispatcher, chat=self._chat, embeddings=self._embeddings,
                                   extraction=self._extraction) if batches is not None else None

    async def check_health(self) -> None:
        """Serve's health check: the ingress answers (and its health loop is running);
        the first one also starts the in-process router's warm-up."""
        self._health.watch()
        if self._runner is not None:
            self._runner.watch()
        if self._local_router is not None:
            await self._local_router.warm_up()

    # ----------------------------------------------------- chat and completions
    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions, with ``model: "auto"`` routed, and optional retrieval."""
        return _response(await self._chat.chat(body, _route_asks(request), RawRequestInfo.from_starlette_request(request)))

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        """OpenAI text completions, with ``model: "auto"`` routed on the prompt."""
        return _response(await self._chat.complete(body, _route_asks(request),
                                                   RawRequestInfo.from_starlette_request(request)))

    async def route(self, body: ChatCompletionRequest, request: Request) -> RouteDecision:
        """Dry run: the decision a chat body would get, with score and features."""
        return await self._chat.route(body, _route_asks(request))

    async def embeddings(self, body: EmbeddingsRequest, request: Request) -> EmbeddingsResponse:
        """OpenAI embeddings from the sentence-transformers embedder."""
        return await self._embeddings.embed(body)

    # -------------------------------------------------- responses, messages, rerank
    async def create_response(self, body: ResponsesRequest, request: Request) -> Response:
        """OpenAI Responses API: a chat turn as typed output items (or events), stored."""
        return _response(await self._responses.create(body, _route_asks(request),
                                                      RawRequestInfo.from_starlette_request(request), _owner(request)))

    async def get_response(self, response_id: str, request: Request) -> dict[str, Any]:
        return await self._responses.get(response_id, _owner(request))

    async def delete_response(self, response_id: str, request: Request) -> dict[str, Any]:
        return await self._responses.delete(response_id, _owner(request))

    async def response_input_items(self, response_id: str, request: Request, after: Optional[str] = None,
                                   limit: int = 20, order: str = "desc") -> dict[str, Any]:
        return await self._responses.input_items(response_id, _owner(request), after=after, limit=limit, order=order)

    async def messages(self, body: MessagesRequest, request: Request) -> Response:
        """Anthropic Messages API, answered by the graph's models (``auto`` routed)."""
        return _response(await self._messages.create(body, _route_asks(request),
                                                     RawRequestInfo.from_starlette_request(request)))

    async def count_tokens(self, body: CountTokensRequest, request: Request) -> dict[str, Any]:
        """Anthropic token count, by the routed model's engine (tokenizer and chat template)."""
        return await self._messages.count_tokens(body, _route_asks(request), RawRequestInfo.from_starlette_request(request))

    async def rerank(self, body: RerankRequest) -> dict[str, Any]:
        """Cohere/Jina rerank: documents by relevance to the query (the embedder's cosine)."""
        return await self._rerank.rerank(body)

    # --------------------------------------------------------------- extraction
    async def extract(self, body: ExtractRequest, request: Request) -> dict[str, Any]:
        """One document → a validated record with per-field sources (or a 4xx)."""
        return await self._extraction.extract(body)

    async def extract_batch(self, body: ExtractBatchRequest, request: Request) -> dict[str, Any]:
        """Many documents, processed concurrently; one result or one error each, in order."""
        return await self._extraction.extract_batch(body, request.headers.get("x-request-id", "-"))

    async def job_posting_schema(self) -> dict[str, Any]:
        """The ``job_posting`` record's JSON schema, and a ``response_format`` for chat."""
        return await self._extraction.job_posting_schema()

    # -------------------------------------------------------------- collections
    async def list_collections(self) -> dict[str, Any]:
        return await self._collections.list()

    async def get_collection(self, collection: str) -> dict[str, Any]:
        return await self._collections.get(collection)

    async def delete_collection(self, collection: str) -> dict[str, Any]:
        return await self._collections.drop(collection)

    async def upsert_documents(self, collection: str, body: UpsertRequest) -> dict[str, Any]:
        """Add or replace documents; answered once they are durable on disk."""
        return await self._collections.upsert(collection, body)

    async def get_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return await self._collections.get_document(collection, doc_id)

    async def delete_document(self, collection: str, doc_id: str) -> dict[str, Any]:
        return await self._collections.delete_document(collection, doc_id)

    async def search_collection(self, collection: str, body: SearchRequest) -> dict[str, Any]:
        """The ``k`` documents closest in meaning to ``query`` (best passage each)."""
        return await self._collections.search(collection, body)

    # ------------------------------------------------------------ files, batches
    async def upload_file(self, file: UploadFile = File(...), purpose: str = Form(...)) -> dict[str, Any]:
        """Upload a JSONL file of requests for a batch (``purpose=batch``)."""
        return await self._batches.upload(file.filename, purpose, await file.read())

    async def list_files(self, purpose: Optional[str] = None, after: Optional[str] = None,
                         limit: Optional[int] = None) -> dict[str, Any]:
        return await self._batches.list_files(purpose, after, limit)

    async def get_file(self, file_id: str) -> dict[str, Any]:
        return await self._batches.get_file(file_id)

    async def file_content(self, file_id: str) -> Response:
        """A file's bytes: an input file as uploaded, a batch's output or error JSONL."""
        return Response(content=await self._batches.file_content(file_id), media_type="application/octet-stream")

    async def delete_file(self, file_id: str) -> dict[str, Any]:
        return await self._batches.delete_file(file_id)

    async def create_batch(self, body: BatchCreateRequest) -> dict[str, Any]:
        """Start a batch: every line of the file goes through the graph as a request would."""
        return await self._batches.create(body)

    async def list_batches(self, after: Optional[str] = None, limit: Optional[int] = None) -> dict[str, Any]:
        return await self._batches.list(after, limit)

    async def get_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._batches.get(batch_id)

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Stop a running batch; what finished is kept."""
        return await self._batches.cancel(batch_id)

    # ------------------------------------------------------- models and health
    async def models(self):
        return await self._models.list()

    async def model_data(self, model: str):
        return await self._models.get(model)

    async def sleep_model(self, model: str) -> dict[str, Any]:
        """Put an on-demand model to sleep now; what its engine held before and after."""
        return await self._models.sleep(model)

    async def wake_model(self, model: str) -> dict[str, Any]:
        """Wake an on-demand model now (evicting idle ones if the budget needs it)."""
        return await self._models.wake(model)

    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        """Readiness: every deployment answered its last health check."""
        ready, picture = await self._models.readiness()
        return JSONResponse(status_code=200 if ready else 503, content=picture)


def _post_at(app: FastAPI, *paths: str) -> Callable:
    """A route decorator that serves one endpoint at several paths."""
    def decorate(endpoint: Callable) -> Callable:
        for path in paths:
            app.post(path)(endpoint)
        return endpoint
    return decorate


ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "sleep_model": lambda app: app.post("/v1/models/{model:path}/sleep"),
    "wake_model": lambda app: app.post("/v1/models/{model:path}/wake"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "completions": lambda app: app.post("/v1/completions"),
    "embeddings": lambda app: app.post("/v1/embeddings", response_model=EmbeddingsResponse),
    "route": lambda app: app.post("/v1/route", response_model=RouteDecision),
    "create_response": lambda app: app.post("/v1/responses"),
    "response_input_items": lambda app: app.get("/v1/responses/{response_id}/input_items"),
    "get_response": lambda app: app.get("/v1/responses/{response_id}"),
    "delete_response": lambda app: app.delete("/v1/responses/{response_id}"),
    "messages": lambda app: app.post("/v1/messages"),
    "count_tokens": lambda app: app.post("/v1/messages/count_tokens"),
    "rerank": lambda app: _post_at(app, "/v1/rerank", "/v2/rerank"),
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
    "upload_file": lambda app: app.post("/v1/files"),
    "list_files": lambda app: app.get("/v1/files"),
    "get_file": lambda app: app.get("/v1/files/{file_id}"),
    "file_content": lambda app: app.get("/v1/files/{file_id}/content"),
    "delete_file": lambda app: app.delete("/v1/files/{file_id}"),
    "create_batch": lambda app: app.post("/v1/batches"),
    "list_batches": lambda app: app.get("/v1/batches"),
    "get_batch": lambda app: app.get("/v1/batches/{batch_id}"),
    "cancel_batch": lambda app: app.post("/v1/batches/{batch_id}/cancel"),
    "healthz": lambda app: app.get("/healthz"),
    "readyz": lambda app: app.get("/readyz"),
}


def build_ingress_app(settings: Settings, targets: frozenset[str] = frozenset(), *, keys: Optional[frozenset[str]] = None,
                      upload_bytes: Optional[int] = None) -> FastAPI:
    """The FastAPI app of the ingress: error envelope and middleware, no routes yet.

    The app is pickled with the ingress class, so it holds no secret: by default the
    API keys are read inside the replica (:func:`configured_api_keys`).

    Args:
        settings: Environment settings (the body limit).
        targets: Model ids the request metrics may name as a target.
        keys: Fixed API keys instead (unit tests).
        upload_bytes: The largest file ``POST /v1/files`` takes (``batch.max_file_bytes``);
            every other route keeps ``settings.max_body_bytes``.
    """
    app = FastAPI(
        title="local-llm-graph",
        description="Several local LLMs as one Ray Serve graph, OpenAI-compatible.",
    )
    install_error_handlers(app)
    # Starlette applies the last added middleware first: catch-all outermost, then
    # authentication, then the body limit (so unauthenticated bodies are never read).
    uploads = {"/v1/files": upload_bytes + MULTIPART_SLACK_BYTES} if upload_bytes else {}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, larger=uploads)
    app.add_middleware(HeaderLimitMiddleware, max_bytes=MAX_HEADER_BYTES)
    key_source = configured_api_keys if keys is None else keys
    app.add_middleware(BrowserGuardMiddleware, keys=key_source, any_host=settings.allow_unauthenticated)
    app.add_middleware(ApiKeyMiddleware, keys=key_source, admins=configured_admin_keys if keys is None else None)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AnthropicErrorMiddleware)  # outside the others: their errors too
    # Outermost: counts every answer, the catch-all's and the auth middleware's included.
    app.add_middleware(RequestMetricsMiddleware, known_targets=set(targets))
    return app


def make_ingress_class(settings: Settings, targets: frozenset[str] = frozenset(), *, upload_bytes: Optional[int] = None) -> type:
    """The ingress class bound to a FastAPI app carrying our middleware and errors."""
    return make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=build_ingress_app(settings, targets, upload_bytes=upload_bytes))
