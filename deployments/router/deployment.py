"""The Router deployment: a thin Ray Serve wrapper around the pure routing logic."""

from __future__ import annotations

from typing import Any, Optional

from deployments.router.decision import RouteTargets, decide
from deployments.router.features import RouteInput
from deployments.router.policies import RoutingPolicy, make_policy
from serve.config import RouterSpec


class Router:
    """Scores requests and picks the extractor or the reasoner.

    Args:
        spec: The profile's router block.
        targets: Model ids and context limits of the two LLMs.
        policy: Injectable policy (tests); built from ``spec.policy`` by default.
    """

    def __init__(
        self,
        spec: RouterSpec,
        targets: RouteTargets,
        *,
        policy: Optional[RoutingPolicy] = None,
    ) -> None:
        self._spec = spec
        self._targets = targets
        self._policy = policy or make_policy(
            spec.policy, long_context_chars=spec.long_context_chars
        )

    async def decide(self, request: RouteInput) -> dict[str, Any]:
        """The routing decision for one request, as a dict."""
        return decide(
            request,
            policy=self._policy,
            threshold=self._spec.threshold,
            targets=self._targets,
        ).to_dict()

    async def check_health(self) -> None:
        """Serve health check: nothing can go stale here."""
        return None
