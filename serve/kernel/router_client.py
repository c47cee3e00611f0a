"""Asking the Router for a decision, bounded in time.

A stalled router (a slow policy, a replica restarting) must never stall every ``auto``
request: past ``LLMGRAPH_ROUTER_TIMEOUT_S`` the request goes to the extractor, the
cheaper model, and the decision's reason says why.

The router asked is the Router deployment's handle, or, where the Router embeds prompts
in its own process, a Router object in the caller's process
(``deployments/router/in_process.py``) called the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serve.kernel.config import Profile
from serve.kernel.errors import typed_handle_errors
from serve.kernel.routing import RouteDecision, RouteInput

logger = logging.getLogger("ray.serve")


def timeout_decision(profile: Profile, timeout_s: float) -> RouteDecision:
    """The safe default when the router did not answer: the extractor, saying why."""
    return RouteDecision(
        target=profile.extractor.model_id, role="extractor",
        reason=f"router timeout: no decision within {timeout_s:g} s; the extractor by default",
        policy=profile.router.policy, score=0.0, threshold=profile.router.threshold,
        features={"router": "timeout"},
    )


async def decide_in_time(router: Any, route_input: RouteInput, *, profile: Profile, timeout_s: float) -> RouteDecision:
    """The router's decision for ``route_input``, or :func:`timeout_decision` after ``timeout_s``.

    Args:
        router: Handle to the Router deployment, or an in-process Router called the same way.
    """
    try:
        with typed_handle_errors():
            return await asyncio.wait_for(router.decide.remote(route_input), timeout_s)
    except asyncio.TimeoutError:
        logger.warning("router did not answer within %.1f s; routing to the extractor", timeout_s)
        return timeout_decision(profile, timeout_s)
