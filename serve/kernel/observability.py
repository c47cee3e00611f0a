"""Request metrics for the ingress, on Ray's metrics pipeline.

Every HTTP request is counted by endpoint, target model and status, and its latency
(to the last byte, streams included) goes into a histogram by endpoint. The metrics are
``ray.serve.metrics`` objects, so they reach the Ray dashboard's Prometheus endpoint
with the replica's own tags; every label takes a bounded set of values (endpoint method
names, model ids from the profile, HTTP status codes), never user input. Deployments
record their own facts next to these: router decisions (Router), route hops (Ingress),
collection sizes (Embedder), GPU gauges (GpuMonitor); vLLM's engine metrics (tokens,
queue, KV cache) come from Ray Serve LLM.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Optional

LATENCY_BOUNDARIES_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 120_000)


@functools.cache
def replica_metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...], boundaries: Optional[tuple[float, ...]] = None):
    """The ``ray.serve.metrics`` ``kind`` (Counter, Gauge, Histogram) called ``name``.

    Created on first use, inside the replica that records it (metric objects do not
    travel with a deployment's constructor arguments), and then shared by every caller
    in that process, so each deployment names its metric in one line.
    """
    from ray.serve import metrics

    extra = {"boundaries": list(boundaries)} if boundaries else {}
    return getattr(metrics, kind)(name, description=description, tag_keys=tag_keys, **extra)


class _Metrics:
    """The ingress's request metrics (a seam the unit tests replace)."""

    def __init__(self) -> None:
        self.requests = replica_metric(
            "Counter", "llmgraph_requests_total", "HTTP requests by endpoint, target model and status code.",
            ("route", "target", "status"),
        )
        self.latency = replica_metric(
            "Histogram", "llmgraph_request_latency_ms", "HTTP request latency to the last byte, by endpoint.",
            ("route",), LATENCY_BOUNDARIES_MS,
        )


class RequestMetricsMiddleware:
    """Pure ASGI middleware (it must not buffer streamed responses)."""

    def __init__(self, app: Any, known_targets: Optional[set[str]] = None) -> None:
        self.app = app
        self._known_targets = known_targets or set()
        self._metrics: Optional[_Metrics] = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "target": "-"}

        async def observe(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-route-target":
                        target = value.decode("latin-1")
                        # A remote fallback's model name is the operator's, not ours: bucket it.
                        seen["target"] = target if target in self._known_targets else "other"
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", None) or "unmatched"
            if self._metrics is None:
                self._metrics = _Metrics()
            self._metrics.requests.inc(tags={"route": route, "target": seen["target"], "status": str(seen["status"])})
            self._metrics.latency.observe((time.perf_counter() - started) * 1000, tags={"route": route})
