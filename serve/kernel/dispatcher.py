"""From a request to a model's answer: resolve, admit, forward, fall back.

The dispatcher is a plain class that lives in the ingress process, built from deployment
handles. Every chat and completion request, and every LLM call of the extraction
pipeline, goes through it:

1. **resolve**: a pin (the ``x-route`` header or a model id) wins; ``auto`` asks the
   Router (bounded in time: a stalled router means the extractor), places its score on
   the profile's tiers (``serve/kernel/tiers.py``: awake-aware), then faces the GPU's thermal
   state and the reasoner's load, either of which keeps it on the extractor;
2. **admission**: thermal shedding (429 + ``Retry-After``) and the in-flight count,
   taken with no await in between so concurrent requests cannot all pass a soft limit;
3. **forward** to the LLM deployment with that model's limits and defaults
   (``serve/kernel/llm_calls.py``: an on-demand model is leased from the residency
   manager first, which wakes it, and given back after the answer's last byte);
4. **fall back** (``auto`` traffic only) to the other resident models, then to the
   remote provider, but only before the first byte: a started stream is never replayed.

It returns protocol data (the reply as the OpenAI JSON object, or the SSE stream) and
the final decision; it never builds HTTP responses and never changes its arguments.
Unit tests drive it with the shared fake handles (``tests/support/fakes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from ray.exceptions import RayActorError

from serve.kernel.chat_params import thinking_budget
from serve.kernel.config import AUTO_MODEL_ID, LLMSpec, Profile
from serve.kernel.conformance import forces_structure, structured_thinking_budget
from serve.kernel.errors import BadRequest, NotFound, RateLimited, Unavailable
from serve.kernel.health import HealthPicture, unless_down
from serve.kernel.limits import apply_generation_limits
from serve.kernel.llm_calls import LlmCalls
from serve.kernel.observability import replica_metric
from serve.kernel.remote import REMOTE_HOP, forward_remote, remote_payload
from serve.kernel.residency_client import Leases
from serve.kernel.router_client import decide_in_time
from serve.kernel.routing import RouteDecision, RouteInput
from serve.kernel.settings import Settings
from serve.kernel.thermal import shed_reason
from serve.kernel.tiers import Tiers

#: The Retry-After of a request whose model stayed down.
DOWN_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Dispatched:
    """What a request got: the reply or the stream, the final decision and every hop."""

    decision: RouteDecision
    hops: tuple[str, ...]
    reply: Optional[dict[str, Any]] = None
    """The OpenAI JSON object of a non-streaming answer."""
    stream: Optional[AsyncIterator[Any]] = field(default=None, repr=False)
    """The SSE text of a streaming answer (``data: ...`` chunks, then ``[DONE]``)."""
    wake_ms: float = 0.0
    """How long the request waited for its (on-demand) model to wake."""


def structured_fields(body: Any) -> dict[str, Any]:
    """The fields of a chat request that shape its reply, as plain data."""
    return body.model_dump(include={"tool_choice", "response_format", "max_tokens", "max_completion_tokens", "logprobs"})


class Dispatcher:
    """Resolve, admit, forward and fall back, for one ingress replica.

    Args:
        profile: The profile the graph was built from.
        llms: The LLM deployments' handles by model id.
        router: The Router deployment's handle.
        health: The replica's health and thermal picture.
        settings: Environment settings (router timeout, the remote provider).
        residency: The residency manager's handle (None when every model is resident).
    """

    def __init__(self, profile: Profile, llms: dict[str, Any], router: Any, health: HealthPicture, settings: Settings,
                 residency: Any = None) -> None:
        self._profile = profile
        self.specs: dict[str, tuple[str, LLMSpec]] = {spec.model_id: (spec.role, spec) for spec in profile.models}
        self._router = router
        self._health = health
        self._settings = settings
        self._tiers = Tiers(profile)
        leases = Leases(residency, profile.residency) if residency is not None else None
        self._calls = LlmCalls(llms, {model_id: spec.on_demand for model_id, (_, spec) in self.specs.items()}, leases,
                               admit=lambda: self.admit(llm=True))

    @property
    def in_flight(self) -> dict[str, int]:
        """Requests this replica is serving now, by model id."""
        return self._calls.in_flight

    # ---------------------------------------------------------------- resolve
    def pinned(self, value: str, source: str) -> RouteDecision:
        """A decision the client made: a model id, or a role name."""
        by_role = {role: model_id for model_id, (role, _) in self.specs.items()}
        target = by_role.get(value, value)
        role, _ = self.specs[target]
        return RouteDecision(
            target=target, role=role, reason=f"pinned: {source}", policy="pinned", score=0.0,
            threshold=self._profile.router.threshold, features={}, pinned=True,
        )

    async def resolve(self, requested: Optional[str], route_input: RouteInput, pin: Optional[str] = None, *,
                      allow_random_weights: bool = False) -> RouteDecision:
        """Pick the LLM: a pin (x-route header or model id) wins; ``auto`` asks the router.

        ``auto`` decisions then face the profile's tiers (no random weights unless the
        profile or ``allow_random_weights``, the request's ``x-route-random-weights: allow``,
        lets them), the GPU's thermal state and the reasoner's load: when one says no,
        the request goes to a lighter model and the reason says why.

        Raises:
            BadRequest: an unknown ``x-route``, or the embedder named for chat.
            NotFound: an unknown model id.
        """
        if pin:
            known = {role for role, _ in self.specs.values()} | set(self.specs)
            if pin not in known:
                raise BadRequest(f"x-route must be one of {sorted(known)}", param="x-route", code="invalid_route")
            return self.pinned(pin, "x-route header")
        if requested in (None, "", AUTO_MODEL_ID):
            self._health.watch()
            decision = await decide_in_time(self._router, route_input, profile=self._profile,
                                            timeout_s=self._settings.router_timeout_s)
            if allow_random_weights:
                decision = decision.model_copy(update={"random_weights_allowed": True})
            return self._degraded(self._tiers.place(decision, self._health, allow_random=allow_random_weights))
        if requested in self.specs:
            return self.pinned(requested, "model named in request")
        if requested == self._profile.embedder.model_id:
            raise BadRequest(f"model {requested!r} is an embedding model; use /v1/embeddings",
                             param="model", code="model_not_supported")
        raise NotFound(f"model {requested!r} does not exist; GET /v1/models lists the models",
                       param="model", code="model_not_found")

    def _degraded(self, decision: RouteDecision) -> RouteDecision:
        """The router's decision after the thermal and capacity checks (a new object)."""
        thermal = self._health.thermal
        level = thermal["level"]
        busy = self.in_flight.get(self._profile.reasoner.model_id, 0)
        limit = self._profile.router.reasoner_max_in_flight
        features = {**decision.features, "thermal_level": level,
                    "capacity": {"reasoner_in_flight": busy, "reasoner_max_in_flight": limit}}
        if decision.role != "reasoner" or (level == "normal" and busy < limit):
            return decision.model_copy(update={"features": features})
        if level != "normal":
            why = f"thermal: GPU at {thermal['temperature_c']:.0f}°C ({level} limit)"  # a hot GPU keeps auto traffic cheap
        else:
            why = f"capacity: reasoner busy ({busy} in flight >= {limit})"
        return decision.model_copy(update={
            "features": features, "role": "extractor", "target": self._profile.extractor.model_id,
            "reason": f"{why}; router wanted the reasoner ({decision.reason})",
        })

    async def send(self, original: Any, call_method: str, route_input: RouteInput, *, pin: Optional[str] = None,
                   allow_random_weights: bool = False, request_info: Any = None) -> Dispatched:
        """:meth:`resolve`, then :meth:`dispatch`: a request from its body to its answer."""
        decision = await self.resolve(original.model, route_input, pin, allow_random_weights=allow_random_weights)
        return await self.dispatch(original, call_method, decision, request_info)

    # -------------------------------------------------------------- admission
    def admit(self, *, llm: bool) -> None:
        """Thermal admission: 429 + Retry-After when the GPU is too hot for this request."""
        self._health.watch()
        spec = self._profile.monitor.thermal
        refusal = shed_reason(self._health.thermal["level"], self._health.thermal.get("temperature_c"),
                              llm=llm, in_flight=sum(self.in_flight.values()), spec=spec)
        if refusal:
            message, code = refusal
            raise RateLimited(message, code=code, headers={"Retry-After": str(spec.retry_after_s)})

    # ---------------------------------------------------------------- forward
    def prepare(self, original: Any, target: str) -> Any:
        """A copy of the request for ``target``, with that model's limits and defaults."""
        body = original.model_copy(deep=True)
        _, spec = self.specs[target]
        apply_generation_limits(body, spec)
        if hasattr(body, "chat_template_kwargs"):
            if spec.default_chat_template_kwargs and not body.chat_template_kwargs:
                body.chat_template_kwargs = dict(spec.default_chat_template_kwargs)
            if spec.thinking_budget_tokens and body.thinking_token_budget is None:
                effort_budget = thinking_budget(getattr(body, "reasoning_effort", None), spec.thinking_budget_tokens)
                body.thinking_token_budget = spec.thinking_budget_tokens if effort_budget is None else effort_budget
                if forces_structure(structured_fields(body)):
                    # Thinking must leave the forced JSON or tool call room to be written.
                    body.thinking_token_budget = structured_thinking_budget(
                        body.thinking_token_budget, body.max_completion_tokens or body.max_tokens)
            if not spec.thinking_budget_tokens:
                body.thinking_token_budget = None  # only engines with a reasoning config take it
        body.model = target
        return body

    # --------------------------------------------------------------- fallback
    def _chain(self, decision: RouteDecision) -> list[str]:
        """The hops to try: the target, then (``auto`` only) the other resident models that
        ``auto`` may answer with (real weights, unless the profile allows random ones),
        nearest tier first (a fallback never wakes a sleeping model), then the remote."""
        chain = [decision.target]
        if not decision.pinned and self._profile.router.fallback_to_other_local:
            order = list(self.specs)
            here = order.index(decision.target) if decision.target in order else 0
            chain += sorted((m for m in order if m != decision.target and not self.specs[m][1].on_demand
                             and self._tiers.may_answer_auto(m, allow_random=decision.random_weights_allowed)),
                            key=lambda m: (abs(order.index(m) - here), order.index(m) > here))
        if not decision.pinned and self._settings.fallback_url:
            chain.append(REMOTE_HOP)
        return chain

    async def dispatch(self, original: Any, call_method: str, decision: RouteDecision, request_info: Any = None) -> Dispatched:
        """Send ``original`` where ``decision`` says, falling back before the first byte.

        A hop is abandoned only when its deployment is known to be down, is shedding
        load, or its replica died; once a reply or a stream has started, it is never
        replayed elsewhere.

        Raises:
            Unavailable: no hop could take the request.
        """
        self._health.watch()
        chain = self._chain(decision)
        hops: list[str] = []
        for position, target in enumerate(chain):
            last = position == len(chain) - 1
            wake_ms = 0.0
            try:
                if target == REMOTE_HOP:
                    reply, stream = await self._call_remote(original, call_method, decision)
                elif not self._health.healthy(self.specs[target][0]) and not last:
                    raise Unavailable(f"{target} is down", code="service_unavailable")
                else:
                    reply, stream, wake_ms = await self._call_while_up(target, self.prepare(original, target),
                                                                       call_method, request_info)
            except (RateLimited, Unavailable, RayActorError) as exc:
                outcome = _hop_outcome(exc)
                if outcome is None:
                    raise  # the request's own error (thermal shedding): no other hop helps
                self._record_hop(target, outcome, hops)
                if last:
                    raise
                continue
            self._record_hop(target, "ok", hops)
            return Dispatched(decision=self._final(decision, target, hops), hops=tuple(hops), reply=reply, stream=stream,
                              wake_ms=wake_ms)
        raise Unavailable("no model could take the request", code="service_unavailable")

    async def _call_while_up(self, target: str, body: Any, call_method: str, request_info: Any):
        """Call ``target``, unless Serve has run no replica of it for ``down_model_wait_s``
        before its reply starts (:func:`~serve.kernel.health.unless_down`): then 503 with
        Retry-After."""
        def still_down() -> Unavailable:
            return Unavailable(f"model {target!r} is not available now (its replica is down); retry later",
                               code="model_unavailable", headers={"Retry-After": str(DOWN_RETRY_AFTER_S)})

        return await unless_down(self._health, self.specs[target][0], self._settings.down_model_wait_s,
                                 self._calls.call(body, call_method, request_info), still_down)

    async def _call_remote(self, original: Any, call_method: str, decision: RouteDecision):
        spec = self.specs[decision.target][1]
        return await forward_remote(
            remote_payload(original, spec), call_method, url=self._settings.fallback_url,
            api_key=self._settings.fallback_api_key.get_secret_value(), model=self._settings.fallback_model,
            timeout_s=self._settings.fallback_timeout_s, max_reply_bytes=self._settings.fallback_max_reply_bytes,
        )

    def _final(self, decision: RouteDecision, target: str, hops: list[str]) -> RouteDecision:
        """The decision as it ended: the first hop's, or the fallback that answered."""
        if target == decision.target:
            return decision
        if target == REMOTE_HOP:
            role, model = REMOTE_HOP, self._settings.fallback_model or REMOTE_HOP
        else:
            role, model = self.specs[target][0], target
        return decision.model_copy(update={
            "target": model, "role": role, "reason": f"fallback after {','.join(hops[:-1])}; {decision.reason}",
        })

    @staticmethod
    def _record_hop(target: str, outcome: str, hops: list[str]) -> None:
        hops.append(f"{target}={outcome}")
        replica_metric(
            "Counter", "llmgraph_route_hops_total", "LLM hops tried per request, by target and outcome.", ("target", "outcome"),
        ).inc(tags={"target": target, "outcome": outcome})


def _hop_outcome(exc: BaseException) -> Optional[str]:
    """Why a hop was abandoned, or None when the error is the request's own."""
    if isinstance(exc, RateLimited):
        return "overloaded" if exc.code == "overloaded" else None  # thermal shedding is not the target's fault
    if isinstance(exc, Unavailable):
        return "unavailable"
    if isinstance(exc, RayActorError):
        return "replica_died"
    return None
