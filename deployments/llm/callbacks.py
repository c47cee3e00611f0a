"""Ray Serve LLM engine-start callbacks.

Before starting an engine, Ray Serve LLM runs a Ray task on every node of the replica's
placement group to download the model files. For weights that already sit in a local
directory (the generated test checkpoints, a model shipped in a package, a path in the
profile) that task downloads nothing but still costs a worker process and ~20 s of a
2-core machine per engine, so we skip it.
"""

from __future__ import annotations

from serve.ray_private import CallbackBase


class LocalWeightsCallback(CallbackBase):
    """Skips the per-node model download step: the weights are already on disk."""

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False
