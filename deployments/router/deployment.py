"""The Router deployment: a thin Ray Serve wrapper around the pure routing logic.

The semantic and hybrid policies need the prompt's embedding. When the profile's
embedder runs on the CPU, the Router holds its own copy of that model (the same ONNX
export, so the same vectors) and embeds the prompt in its own process: a decision is
then one hop from the ingress instead of three (Ingress -> Router -> Embedder -> Router
-> Ingress), and bulk embedding work queued at the Embedder never delays it. A GPU
embedder stays the one copy on the card, called through its handle.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from deployments.router.decision import decide

from deployments.router.exemplars import load_exemplars
from deployments.router.features import text_to_embed
from deployments.router.policies import NEEDS_EXEMPLARS, ExemplarVectors, RoutingPolicy, make_policy
from serve.kernel.config import CONFIGS_DIR, RouterSpec
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.log_filters import quiet_probes
from serve.kernel.observability import replica_metric
from serve.kernel.routing import RouteDecision, RouteInput, RouteTargets

#: Prompts up to this long are scored on the event loop (a thread hop would cost more than
#: the scan); longer ones in a worker thread.
INLINE_SCAN_CHARS = 4_000

if TYPE_CHECKING:
    from deployments.embedder.encoder import Encoder
    from serve.kernel.config import EmbedderSpec

logger = logging.getLogger("ray.serve")


class Router:
    """Scores requests and picks the extractor or the reasoner.

    Args:
        spec: The profile's router block.
        targets: Model ids and context limits of the two LLMs.
        embedder: Handle to the Embedder deployment (semantic and hybrid policies).
        multilingual_embedder: Whether that embedder understands many languages.
        local_encoder: The embedder's spec and model path, to embed prompts in this
            process instead of calling the Embedder (see the module docstring).
        encoder: Injectable in-process encoder (tests).
        policy: Injectable policy (tests); built from ``spec.policy`` by default.
    """

    def __init__(
        self,
        spec: RouterSpec,
        targets: RouteTargets,
        embedder: Any = None,
        *,
        multilingual_embedder: bool = False,
        local_encoder: Optional[tuple["EmbedderSpec", str]] = None,
        encoder: Optional["Encoder"] = None,
        policy: Optional[RoutingPolicy] = None,
    ) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        self._spec = spec
        self._targets = targets
        self._embedder = embedder
        self._multilingual = multilingual_embedder
        if encoder is None and local_encoder is not None:
            from deployments.embedder.encoder import make_encoder
            from serve.kernel.settings import load_settings

            embedder_spec, model_path = local_encoder
            # No more threads than this process has cores: one, where it keeps to the
            # control plane's core (two threads on one core only take turns).
            threads = min(embedder_spec.cpu_threads or os.cpu_count() or 1, len(os.sched_getaffinity(0)))
            embedder_spec = embedder_spec.model_copy(update={"cpu_threads": threads})
            encoder = make_encoder(embedder_spec, model_path, cache_dir=load_settings().cache_dir, int8=spec.embed_int8)
        self._encoder = encoder
        self._policy = policy
        self._ready = asyncio.Lock()
        self._warmup: Optional[asyncio.Task] = None
        if policy is None and spec.policy not in NEEDS_EXEMPLARS:
            self._policy = make_policy(spec.policy, spec)

    async def _ensure_policy(self) -> RoutingPolicy:
        if self._policy is not None:
            return self._policy
        # Exemplars are embedded by the Embedder deployment, which may still be starting
        # when this replica is constructed: do it on first use.
        async with self._ready:
            if self._policy is None:
                exemplars = load_exemplars(CONFIGS_DIR / self._spec.exemplars)
                vectors = ExemplarVectors(
                    vectors=await self._embed([e.prompt[: self._spec.embed_chars] for e in exemplars]),
                    labels=tuple(int(e.label == "reasoner") for e in exemplars),
                    categories=tuple(e.category for e in exemplars),
                    multilingual=self._multilingual,
                )
                self._policy = make_policy(self._spec.policy, self._spec, vectors)
                logger.info("router policy %s ready with %d exemplars", self._spec.policy, len(exemplars))
        return self._policy

    async def decide(self, request: RouteInput) -> RouteDecision:
        """The routing decision for one request."""
        policy = await self._ensure_policy()
        if policy.needs_embedding and request.embedding is None:
            vector = (await self._embed([text_to_embed(request, self._spec.embed_chars)]))[0]
            request = dataclasses.replace(request, embedding=vector)
        scoring = functools.partial(decide, request, policy=policy, threshold=self._spec.threshold,
                                    targets=self._targets)
        # The feature scans are linear and capped (SCAN_CHARS), yet a long prompt's still
        # takes milliseconds: off the event loop, which streams other requests' tokens
        # (in the ingress, where auto is decided in process) and answers health checks.
        decision = await asyncio.to_thread(scoring) if len(request.text) > INLINE_SCAN_CHARS else scoring()
        self._count_decision(decision)
        return decision

    async def _embed(self, texts: list[str]) -> np.ndarray:
        """Vectors for ``texts``: in this process when it holds an encoder, else from the
        Embedder deployment."""
        if self._encoder is not None:
            # In a thread: ONNX Runtime and torch release the GIL, so health checks and
            # other decisions keep being answered meanwhile.
            return await asyncio.to_thread(self._encoder.encode, texts)
        result = await self._embedder.embed.remote(texts)
        return np.asarray(result["vectors"], dtype=np.float32)

    def _count_decision(self, decision: RouteDecision) -> None:
        replica_metric(
            "Counter", "llmgraph_router_decisions_total",
            "Routing decisions by policy and chosen role (before thermal/capacity overrides).", ("policy", "role"),
        ).inc(tags={"policy": decision.policy, "role": decision.role})

    async def check_health(self) -> None:
        """Serve health check; the first one also starts embedding the exemplars, so
        the first routed request does not pay for it."""
        if self._policy is None and self._warmup is None:
            self._warmup = asyncio.get_running_loop().create_task(self._warm(), context=contextvars.Context())

    async def _warm(self) -> None:
        try:
            await self._ensure_policy()
        except Exception:  # noqa: BLE001 - decide() retries on first use
            logger.warning("router warm-up failed; exemplars will be embedded on first use", exc_info=True)
