"""Asking the Router for a decision, bounded in time.

A stalled router (a slow policy, a replica restarting) must never stall every ``auto``
request: past ``LLMGRAPH_ROUTER_TIMEOUT_S`` the request goes to the extractor, the
cheaper model, and the decision's reason says why.

Where the Router embeds prompts in its own process (a CPU embedder), the ingress holds a
Router of its own (:class:`InProcessRouter`) and decides where the request's text already
is: no hop to the Router deployment and back, and nothing pickled on the way, which was
a third of what ``auto`` added to the first token on 2 cores. The Router deployment stays,
for the Extraction deployment's calls.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from deployments.router.decision import RouteDecision
from deployments.router.features import RouteInput
from serve.config import Profile
from serve.errors import typed_handle_errors

logger = logging.getLogger("ray.serve")


def timeout_decision(profile: Profile, timeout_s: float) -> RouteDecision:
    """The safe default when the router did not answer: the extractor, saying why."""
    return RouteDecision(
        target=profile.extractor.model_id, role="extractor",
        reason=f"router timeout: no decision within {timeout_s:g} s; the extractor by default",
        policy=profile.router.policy, score=0.0, threshold=profile.router.threshold,
        features={"router": "timeout"},
    )


class InProcessRouter:
    """A Router object in the caller's process, called like the Router deployment's
    handle (``router.decide.remote(route_input)``), so the dispatcher takes either."""

    def __init__(self, profile: Profile, embedder_path: str | Path) -> None:
        from deployments.router.decision import RouteTargets
        from deployments.router.deployment import Router

        self.router = Router(profile.router, RouteTargets.of(profile), None,
                             multilingual_embedder=profile.embedder.multilingual,
                             local_encoder=(profile.embedder, str(embedder_path)))
        self.decide = SimpleNamespace(remote=self.router.decide)

    async def warm_up(self) -> None:
        """Start embedding the exemplars in the background (once), not on the first
        routed request: what the Router deployment does on its first health check."""
        await self.router.check_health()


async def decide_in_time(router: Any, route_input: RouteInput, *, profile: Profile, timeout_s: float) -> RouteDecision:
    """The router's decision for ``route_input``, or :func:`timeout_decision` after ``timeout_s``.

    Args:
        router: Handle to the Router deployment, or an :class:`InProcessRouter`.
    """
    try:
        with typed_handle_errors():
            return await asyncio.wait_for(router.decide.remote(route_input), timeout_s)
    except asyncio.TimeoutError:
        logger.warning("router did not answer within %.1f s; routing to the extractor", timeout_s)
        return timeout_decision(profile, timeout_s)
