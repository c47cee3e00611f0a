"""A Router in the ingress's own process, for profiles whose Router embeds prompts itself.

Where the Router embeds prompts in its own process (a CPU embedder), the ingress holds a
Router of its own and decides where the request's text already is: no hop to the Router
deployment and back, and nothing pickled on the way, which was a third of what ``auto``
added to the first token on 2 cores (``python -m serve bench overhead``). The Router
deployment stays, for the Extraction deployment's calls. The application builder
(``serve/app.py``) hands the ingress this class; the ingress never imports a node.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from deployments.router.deployment import Router
from serve.kernel.config import Profile
from serve.kernel.routing import RouteTargets


class InProcessRouter:
    """A Router object in the caller's process, called like the Router deployment's
    handle (``router.decide.remote(route_input)``), so the dispatcher takes either."""

    def __init__(self, profile: Profile, embedder_path: str | Path) -> None:
        self.router = Router(profile.router, RouteTargets.of(profile), None,
                             multilingual_embedder=profile.embedder.multilingual,
                             local_encoder=(profile.embedder, str(embedder_path)))
        self.decide = SimpleNamespace(remote=self.router.decide)

    async def warm_up(self) -> None:
        """Start embedding the exemplars in the background (once), not on the first
        routed request: what the Router deployment does on its first health check."""
        await self.router.check_health()
