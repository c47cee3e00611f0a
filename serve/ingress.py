"""The HTTP ingress: one OpenAI-compatible front door for the whole graph.

It extends Ray Serve LLM's ``OpenAiIngress`` (which already forwards chat and
completions to LLMServer handles, streams SSE, and applies the request timeout) with
what a multi-model graph needs: ``model: "auto"`` resolved by the Router, route headers,
embeddings from our own embedder, the ``/v1/route`` dry run, health and readiness, and
the project's error envelope. It stays thin: validate, ask the router, forward, map
errors.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from deployments.llm.sources import source_provenance
from deployments.monitor.thermal import shed_reason
from deployments.router.features import RouteInput, route_input_from_chat
from serve.config import AUTO_MODEL_ID, LLMSpec, Profile
from serve.errors import (
    BadRequest,
    NotFound,
    RateLimited,
    Unavailable,
    install_error_handlers,
    serve_errors_as_http,
    within,
)
from serve.collections_api import CollectionEndpoints
from serve.conformance import check_chat_reply, forces_structure, needs_check, structured_thinking_budget
from serve.extract_api import ExtractionEndpoints
from serve.limits import apply_generation_limits
from serve.middleware import MAX_HEADER_BYTES, ApiKeyMiddleware, BodyLimitMiddleware, CatchAllMiddleware, HeaderLimitMiddleware
from serve.observability import RequestMetricsMiddleware, replica_metric
from serve import rag
from serve.protocol import (
    CHAT_ROLES,
    EmbeddingItem,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    RetrievalOptions,
    RouteResponse,
    unknown_role,
)
from serve.remote import REMOTE_HOP, forward_remote, remote_payload
from serve.router_client import decide_in_time
from serve.settings import Settings, configured_api_keys, load_settings

logger = logging.getLogger("ray.serve")

ROUTE_TARGET_HEADER = "x-route-target"
ROUTE_REASON_HEADER = "x-route-reason"
ROUTE_HOPS_HEADER = "x-route-hops"
HEALTH_PROBE_INTERVAL_S = 1.0
HEALTH_PROBE_TIMEOUT_S = 2.0
#: A stalled monitor leaves the last known thermal state in force.
MONITOR_TIMEOUT_S = 5.0
TEST_CHECKPOINT_NOTE = (
    "Generated test checkpoint with RANDOM weights: every serving path is real, the "
    "generated text is meaningless. The `cpu` profile's extractor and the GPU profiles "
    "serve real models."
)


def _model_card(model_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "owned_by": "local-llm-graph",
        "permission": [],
        "metadata": metadata,
    }


def _llm_metadata(spec: LLMSpec, role: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "role": role,
        "description": spec.description,
        "max_model_len": spec.max_model_len,
        "max_tokens_limit": spec.max_tokens_limit,
        "tools": bool(spec.tool_call_parser),
        "reasoning": bool(spec.reasoning_parser),
        "test_checkpoint": spec.is_test_checkpoint,
        **source_provenance(spec.source),
    }
    if spec.is_test_checkpoint:
        meta["note"] = TEST_CHECKPOINT_NOTE
    return meta


def _structured_fields(body: Any) -> dict[str, Any]:
    """The fields of a chat request that shape its reply, as plain data."""
    return body.model_dump(include={"tool_choice", "response_format", "max_tokens", "max_completion_tokens", "logprobs"})


def _conforming(response: Response, body: ChatCompletionRequest) -> Response:
    """A non-streaming chat reply checked (and repaired) against what its request asked for.

    Streams pass untouched: their bytes are already on the way to the client.
    """
    if getattr(response, "body_iterator", None) is not None:
        return response
    fields = _structured_fields(body)
    if not needs_check(fields):
        return response
    try:
        reply = json.loads(response.body)
    except ValueError:
        return response
    if "choices" not in reply:
        return response  # an error envelope
    checked = check_chat_reply(fields, reply)
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse(content=checked, status_code=response.status_code, headers=headers)


def _route_input(body: ChatCompletionRequest) -> RouteInput:
    fields = {"messages", "tools", "response_format", "max_tokens", "max_completion_tokens"}
    return route_input_from_chat(body.model_dump(include=fields))


class Ingress(ExtractionEndpoints, CollectionEndpoints, OpenAiIngress):
    """HTTP entry point of the graph.

    Args:
        profile: The validated profile the graph was built from.
        extractor: Handle to the extractor LLMServer.
        reasoner: Handle to the reasoner LLMServer.
        embedder: Handle to the Embedder deployment.
        router: Handle to the Router deployment.
        monitor: Handle to the GpuMonitor deployment.

    Environment settings are read in the replica, not bound: bound arguments are pickled
    into Serve's checkpoint, and the settings hold the API keys.
    """

    def __init__(
        self,
        profile: Profile,
        extractor: DeploymentHandle,
        reasoner: DeploymentHandle,
        embedder: DeploymentHandle,
        router: DeploymentHandle,
        monitor: DeploymentHandle,
    ) -> None:
        from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard

        self._profile = profile
        self._settings = load_settings()
        self._llm_specs = {
            profile.extractor.model_id: ("extractor", profile.extractor),
            profile.reasoner.model_id: ("reasoner", profile.reasoner),
        }
        llm_cards = {
            model_id: ModelCard(**_model_card(model_id, _llm_metadata(spec, role)))
            for model_id, (role, spec) in self._llm_specs.items()
        }
        super().__init__(
            llm_deployments={
                profile.extractor.model_id: extractor,
                profile.reasoner.model_id: reasoner,
            },
            model_cards=llm_cards,
        )
        self._extra_cards = {
            AUTO_MODEL_ID: ModelCard(
                **_model_card(
                    AUTO_MODEL_ID,
                    {
                        "role": "router",
                        "policy": profile.router.policy,
                        "routes_to": [profile.extractor.model_id, profile.reasoner.model_id],
                    },
                )
            ),
            profile.embedder.model_id: ModelCard(
                **_model_card(
                    profile.embedder.model_id,
                    {"role": "embedder", "dimensions": profile.embedder.dimensions,
                     **source_provenance(profile.embedder.source)},
                )
            ),
        }
        self._embedder = embedder
        self._router = router
        self._monitor = monitor
        self._thermal: dict[str, Any] = {"level": "normal", "temperature_c": None}
        self._thermal_task: Optional[asyncio.Task] = None
        self._in_flight_by_target: dict[str, int] = {}
        # Last known health of each LLM deployment, so a fallback does not wait on a
        # deployment that is down (a Serve handle would queue until it comes back).
        self._llm_healthy: dict[str, bool] = {model_id: True for model_id in self._llm_specs}
        self._health_task: Optional[asyncio.Task] = None
        self._health_targets = {
            "extractor": extractor,
            "reasoner": reasoner,
            "embedder": embedder,
            "router": router,
            "monitor": monitor,
        }

    # ----------------------------------------------------------------- models
    async def model(self, model_id: str):
        if model_id in self._extra_cards:
            return self._extra_cards[model_id]
        return await super().model(model_id)

    async def models(self):
        listing = await super().models()
        listing.data = [self._extra_cards[AUTO_MODEL_ID], *listing.data, self._extra_cards[self._profile.embedder.model_id]]
        return listing

    # -------------------------------------------------------------- admission
    def _watch_thermal(self) -> None:
        """Keep a local copy of the monitor's thermal level (no per-request hop)."""
        if self._thermal_task is None:
            # A fresh context: the loop must not carry the first request's id in its logs.
            self._thermal_task = asyncio.get_running_loop().create_task(self._thermal_loop(), context=contextvars.Context())

    async def _thermal_loop(self) -> None:
        interval = min(self._profile.monitor.poll_interval_s, 1.0)
        while True:
            try:
                self._thermal = await asyncio.wait_for(self._monitor.admission.remote(), MONITOR_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - keep the last known level
                logger.warning("thermal state unavailable: %r", exc)
            await asyncio.sleep(interval)

    def _admit(self, *, llm: bool) -> None:
        """Thermal admission: 429 + Retry-After when the GPU is too hot for this request."""
        self._watch_thermal()
        thermal = self._profile.monitor.thermal
        refusal = shed_reason(
            self._thermal["level"], self._thermal.get("temperature_c"),
            llm=llm, in_flight=sum(self._in_flight_by_target.values()), spec=thermal,
        )
        if refusal:
            message, code = refusal
            raise RateLimited(message, code=code, headers={"Retry-After": str(thermal.retry_after_s)})

    def _count(self, target: str, delta: int) -> None:
        self._in_flight_by_target[target] = self._in_flight_by_target.get(target, 0) + delta

    async def _forward_llm(self, body: Any, call_method: str, request: Request) -> Response:
        """Forward to the LLM, counting in-flight requests until the last byte is sent."""
        target = body.model
        # Admission and the count happen with no await in between, so concurrent
        # requests cannot all pass a soft-limit check before any of them is counted.
        self._admit(llm=True)
        self._count(target, +1)
        try:
            with serve_errors_as_http():
                response = await self._process_llm_request(body, call_method=call_method, raw_request=request)
        except BaseException:
            self._count(target, -1)
            raise
        iterator = getattr(response, "body_iterator", None)
        if iterator is None:
            self._count(target, -1)
            return response

        async def counted():
            try:
                async for chunk in iterator:
                    yield chunk
            finally:
                self._count(target, -1)

        response.body_iterator = counted()
        return response

    # --------------------------------------------------------------- fallback
    def _watch_llm_health(self) -> None:
        if self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self._llm_health_loop(), context=contextvars.Context())

    async def _llm_health_loop(self) -> None:
        while True:
            for model_id, handle in self._default_serve_handles.items():
                try:
                    await asyncio.wait_for(handle.check_health.remote(), HEALTH_PROBE_TIMEOUT_S)
                    healthy = True
                except Exception:  # noqa: BLE001 - any failure or timeout means "down"
                    healthy = False
                if healthy != self._llm_healthy.get(model_id):
                    logger.warning("LLM deployment %s is now %s", model_id, "healthy" if healthy else "unavailable")
                self._llm_healthy[model_id] = healthy
            await asyncio.sleep(HEALTH_PROBE_INTERVAL_S)

    def _record_hop(self, target: str, outcome: str) -> None:
        replica_metric(
            "Counter", "llmgraph_route_hops_total", "LLM hops tried per request, by target and outcome.", ("target", "outcome"),
        ).inc(tags={"target": target, "outcome": outcome})

    def _prepare(self, original: Any, target: str) -> Any:
        """A copy of the request for ``target``, with that model's limits and defaults."""
        body = original.model_copy(deep=True)
        _, spec = self._llm_specs[target]
        apply_generation_limits(body, spec)
        if hasattr(body, "chat_template_kwargs"):
            if spec.default_chat_template_kwargs and not body.chat_template_kwargs:
                body.chat_template_kwargs = dict(spec.default_chat_template_kwargs)
            if spec.thinking_budget_tokens and body.thinking_token_budget is None:
                body.thinking_token_budget = spec.thinking_budget_tokens
                if forces_structure(_structured_fields(body)):
                    # Thinking must leave the forced JSON or tool call room to be written.
                    body.thinking_token_budget = structured_thinking_budget(
                        spec.thinking_budget_tokens, body.max_completion_tokens or body.max_tokens
                    )
            if not spec.thinking_budget_tokens:
                body.thinking_token_budget = None  # only engines with a reasoning config take it
        body.model = target
        return body

    async def _forward_with_fallback(self, original: Any, call_method: str, request: Request, decision: RouteResponse) -> Response:
        """Try the routed model, then (for ``auto`` traffic) the other local model.

        A hop is abandoned only before the first byte reaches the client: when its
        deployment is known to be down, is shedding load, or its replica died. Once a
        response (or a stream) has started, it is never replayed elsewhere.
        """
        self._watch_llm_health()
        chain = [decision.target]
        if not decision.pinned and self._profile.router.fallback_to_other_local:
            chain += [m for m in self._llm_specs if m != decision.target]
        if not decision.pinned and self._settings.fallback_url:
            chain.append(REMOTE_HOP)
        hops: list[str] = []
        for position, target in enumerate(chain):
            last = position == len(chain) - 1
            outcome = None
            if target == REMOTE_HOP:
                try:
                    response = await forward_remote(
                        remote_payload(original, self._llm_specs[decision.target][1]), call_method,
                        url=self._settings.fallback_url, api_key=self._settings.fallback_api_key.get_secret_value(),
                        model=self._settings.fallback_model, timeout_s=self._settings.fallback_timeout_s,
                    )
                except Unavailable:
                    hops.append(f"{REMOTE_HOP}=unavailable")
                    self._record_hop(REMOTE_HOP, "unavailable")
                    raise
            elif not self._llm_healthy.get(target, True) and not last:
                outcome = "unavailable"
            else:
                try:
                    response = await self._forward_llm(self._prepare(original, target), call_method, request)
                except RateLimited as exc:
                    if exc.code != "overloaded" or last:
                        raise  # thermal shedding is not the target's fault
                    outcome = "overloaded"
                except Unavailable:
                    if last:
                        raise
                    outcome = "unavailable"
                except RayActorError:
                    if last:
                        raise
                    outcome = "replica_died"
            if outcome:
                hops.append(f"{target}={outcome}")
                self._record_hop(target, outcome)
                continue
            hops.append(f"{target}=ok")
            self._record_hop(target, "ok")
            if position:
                if target == REMOTE_HOP:
                    decision.target, decision.role = self._settings.fallback_model or REMOTE_HOP, REMOTE_HOP
                else:
                    decision.target, decision.role = target, self._llm_specs[target][0]
                decision.reason = f"fallback after {','.join(hops[:-1])}; {decision.reason}"
            response.headers[ROUTE_HOPS_HEADER] = ",".join(hops)
            return response
        raise Unavailable("no model could take the request", code="service_unavailable")

    # ---------------------------------------------------------------- routing
    def _pinned(self, value: str, source: str) -> RouteResponse:
        """A decision the client made: a model id, or a role name in the x-route header."""
        by_role = {role: model_id for model_id, (role, _) in self._llm_specs.items()}
        target = by_role.get(value, value)
        role, _ = self._llm_specs[target]
        return RouteResponse(
            target=target, role=role, reason=f"pinned: {source}", policy="pinned", score=0.0,
            threshold=self._profile.router.threshold, features={}, pinned=True,
        )

    async def _resolve(self, requested: Optional[str], route_input: RouteInput, pin: Optional[str] = None) -> RouteResponse:
        """Pick the LLM: a pin (x-route header or model id) wins; ``auto`` asks the router.

        ``auto`` decisions then face the GPU's thermal state and the reasoner's load:
        when either says no, the request goes to the extractor and the reason says why.
        """
        if pin:
            known = {role for role, _ in self._llm_specs.values()} | set(self._llm_specs)
            if pin not in known:
                raise BadRequest(
                    f"x-route must be one of {sorted(known)}", param="x-route", code="invalid_route"
                )
            return self._pinned(pin, "x-route header")
        if requested in (None, "", AUTO_MODEL_ID):
            self._watch_thermal()
            decision = await decide_in_time(
                self._router, route_input, profile=self._profile, timeout_s=self._settings.router_timeout_s
            )
            level = self._thermal["level"]
            busy = self._in_flight_by_target.get(self._profile.reasoner.model_id, 0)
            limit = self._profile.router.reasoner_max_in_flight
            decision.features["thermal_level"] = level
            decision.features["capacity"] = {"reasoner_in_flight": busy, "reasoner_max_in_flight": limit}
            if decision.role == "reasoner" and (level != "normal" or busy >= limit):
                if level != "normal":
                    # A hot GPU keeps auto traffic on the cheaper model.
                    why = f"thermal: GPU at {self._thermal['temperature_c']:.0f}°C ({level} limit)"
                else:
                    why = f"capacity: reasoner busy ({busy} in flight >= {limit})"
                decision.role, decision.target = "extractor", self._profile.extractor.model_id
                decision.reason = f"{why}; router wanted the reasoner ({decision.reason})"
            return decision
        if requested in self._llm_specs:
            return self._pinned(requested, "model named in request")
        if requested == self._profile.embedder.model_id:
            raise BadRequest(
                f"model {requested!r} is an embedding model; use /v1/embeddings",
                param="model", code="model_not_supported",
            )
        raise NotFound(
            f"model {requested!r} does not exist; GET /v1/models lists the models",
            param="model", code="model_not_found",
        )

    @staticmethod
    def _with_route_headers(response: Response, decision: RouteResponse) -> Response:
        response.headers[ROUTE_TARGET_HEADER] = decision.target
        response.headers[ROUTE_REASON_HEADER] = decision.reason
        return response

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        """OpenAI chat completions, with ``model: "auto"`` routed, and optional retrieval."""
        if (bad := unknown_role(body.messages)) is not None:
            raise BadRequest(f"messages[{bad[0]}].role {bad[1]!r} is not one of {sorted(CHAT_ROLES)}",
                             param=f"messages[{bad[0]}].role", code="invalid_role")
        self._admit(llm=True)
        retrieval = self._retrieval_options(body)
        if retrieval is not None:
            return await self._rag_chat(body, request, retrieval)
        decision = await self._resolve(body.model, _route_input(body), request.headers.get("x-route"))
        response = await self._forward_with_fallback(body, "chat", request, decision)
        return self._with_route_headers(_conforming(response, body), decision)

    @staticmethod
    def _retrieval_options(body: ChatCompletionRequest) -> Optional[RetrievalOptions]:
        extra = body.__pydantic_extra__ or {}
        if "retrieval" not in extra:
            return None
        raw = extra.pop("retrieval")  # ours, not the engine's
        try:
            return RetrievalOptions.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise BadRequest(f"retrieval.{where}: {first.get('msg')}" if where else f"retrieval: {first.get('msg')}",
                             param=f"retrieval.{where}".rstrip(".")) from None

    async def _rag_chat(self, body: ChatCompletionRequest, request: Request, retrieval: RetrievalOptions) -> Response:
        """Search the collection, answer with the passages in context, return both."""
        self._check_collection_name(retrieval.collection)
        query = retrieval.query or rag.last_user_text(body.messages)
        if not query.strip():
            raise BadRequest("retrieval needs a user message (or retrieval.query) to search with", param="retrieval.query")
        results = await self._search(retrieval.collection, query, retrieval.k, retrieval.filter)
        body.messages = rag.with_context(body.messages, rag.context_message(results, self._profile.collections.rag_context_chars))
        decision = await self._resolve(body.model, _route_input(body), request.headers.get("x-route"))
        response = await self._forward_with_fallback(body, "chat", request, decision)
        response = rag.attach(response, retrieval.collection, query, results)
        return self._with_route_headers(response, decision)

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        """OpenAI text completions, with ``model: "auto"`` routed on the prompt."""
        self._admit(llm=True)
        prompt = body.prompt
        text = prompt if isinstance(prompt, str) else " ".join(p for p in prompt if isinstance(p, str)) if isinstance(prompt, list) else ""
        decision = await self._resolve(body.model, RouteInput(text=text, last_user_text=text, max_tokens=body.max_tokens), request.headers.get("x-route"))
        response = await self._forward_with_fallback(body, "completions", request, decision)
        return self._with_route_headers(response, decision)

    async def route(self, body: ChatCompletionRequest, request: Request) -> RouteResponse:
        """Dry run: the decision a chat body would get, with score and features."""
        return await self._resolve(body.model, _route_input(body), request.headers.get("x-route"))

    # ------------------------------------------------------------- embeddings
    async def embeddings(self, body: EmbeddingsRequest, request: Request) -> EmbeddingsResponse:
        """OpenAI embeddings from the sentence-transformers embedder."""
        self._admit(llm=False)
        spec = self._profile.embedder
        if body.model not in (spec.model_id, AUTO_MODEL_ID):
            if body.model in self._llm_specs:
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

        with serve_errors_as_http():
            result = await within(self._embedder.embed.remote(texts), self._settings.embedder_timeout_s, "the embedder")
        vectors: np.ndarray = result["vectors"]
        data = []
        for i, vector in enumerate(vectors):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            else:
                value = vector.tolist()
            data.append(EmbeddingItem(index=i, embedding=value))
        tokens = int(result["tokens"])
        return EmbeddingsResponse(
            data=data, model=spec.model_id,
            usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    # ----------------------------------------------------------------- health
    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress answers."""
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        """Readiness: every deployment answers its health check in time."""
        timeout = self._settings.readiness_timeout_s

        async def probe(handle: DeploymentHandle) -> str:
            try:
                await asyncio.wait_for(handle.check_health.remote(), timeout)
                return "ok"
            except asyncio.TimeoutError:
                return "timeout"
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                logger.warning("readiness probe failed: %r", exc)
                return "error"

        names = list(self._health_targets)
        results = await asyncio.gather(*(probe(self._health_targets[n]) for n in names))
        deployments = dict(zip(names, results))
        try:
            gpu = await asyncio.wait_for(self._monitor.snapshot.remote(), timeout)
        except Exception:  # noqa: BLE001
            gpu = {"available": None}
        ready = all(status == "ok" for status in deployments.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={
                "status": "ready" if ready else "not_ready",
                "profile": self._profile.name,
                "deployments": deployments,
                "gpu": gpu,
            },
        )


ENDPOINTS = {
    "models": lambda app: app.get("/v1/models"),
    "model_data": lambda app: app.get("/v1/models/{model:path}"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "completions": lambda app: app.post("/v1/completions"),
    "embeddings": lambda app: app.post("/v1/embeddings", response_model=EmbeddingsResponse),
    "route": lambda app: app.post("/v1/route", response_model=RouteResponse),
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
    app.add_middleware(ApiKeyMiddleware, keys=configured_api_keys if keys is None else keys)
    app.add_middleware(CatchAllMiddleware)
    # Outermost: counts every answer, the catch-all's and the auth middleware's included.
    app.add_middleware(RequestMetricsMiddleware, known_targets=set(targets))
    return app


def make_ingress_class(settings: Settings, targets: frozenset[str] = frozenset()) -> type:
    """The ingress class bound to a FastAPI app carrying our middleware and errors."""
    return make_fastapi_ingress(Ingress, endpoint_map=ENDPOINTS, app=build_ingress_app(settings, targets))
