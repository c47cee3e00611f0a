"""Ray Serve switches the graph's replicas run with: one event loop per replica.

By default a Serve replica runs its user code on an event loop in a second thread, and
its outgoing handle calls on a router loop in a third; every request, and every chunk
of a stream, crosses from one thread to the next and back. On the CPU profile the
control plane has one core, and at 8 streaming clients these hand-offs were most of the
replicas' work: the HTTP proxy, the ingress and the LLM replica each handle every
chunk. Ray's own throughput mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED``) turns both off;
the graph turns off just these two, per replica, through each deployment's runtime
environment, so a plain ``serve run serve_config.yaml`` gets them (the proxy, which Ray
starts, keeps its defaults). Measured on the ``cpu`` profile at 8 clients: 292 → 307
output tokens/s, time to first token 130 → 85 ms (README, "Overhead").

The cost: user code shares the loop with the replica's own control calls (health
checks, metrics), so nothing in the graph may block its loop; the graph's blocking work
already runs in threads (the Embedder's encoder, file writes of collections).
"""

from __future__ import annotations

SINGLE_LOOP_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}
